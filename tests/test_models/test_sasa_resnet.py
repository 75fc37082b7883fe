"""SASAResNet and its attention stem: shapes, parameter counts, freezing."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS as MMDET_MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmtwins.models.backbones import SASAResNet
from mmtwins.models.backbones.sasa_resnet import SASABottleneck
from mmtwins.models.layers import SASAStem, SASAttention

pytestmark = pytest.mark.usefixtures('single_thread')

FC_HEAD = 2048 * 1000 + 1000  # the ImageNet classifier SASA Table 1 counts


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _meta_model(**kwargs):
    """A full-size model without memory or initialisation, for counting."""
    with torch.device('meta'):
        return SASAResNet(**kwargs)


# Exact counts of our backbones plus a 1000-class fc head; the paper's
# (SASA Table 1) 10.3M / 14.1M / 18.0M, within 0.1M.
PINNED = {
    (26, 'conv'): 10_342_632,
    (38, 'conv'): 14_190_632,
    (50, 'conv'): 18_038_632,
    (26, 'attention'): 10_335_592,
    (38, 'attention'): 14_183_592,
    (50, 'attention'): 18_031_592,
}
PAPER = {26: 10.3, 38: 14.1, 50: 18.0}


@pytest.mark.parametrize('depth,stem', sorted(PINNED))
def test_parameter_counts(depth, stem):
    count = _count(_meta_model(depth=depth, stem=stem)) + FC_HEAD
    assert count == PINNED[depth, stem]
    assert abs(count / 1e6 - PAPER[depth]) < 0.1


# SASA Table 3 (ResNet-50, conv stem): which stages keep 3x3 convs.
TABLE3 = [
    ((True, True, True, True), 18.0),
    ((False, True, True, True), 18.1),
    ((False, False, True, True), 18.5),
    ((False, False, False, True), 20.8),
    ((False, False, False, False), 25.6),
    ((True, False, False, False), 25.5),
    ((True, True, False, False), 25.0),
    ((True, True, True, False), 22.7),
]


@pytest.mark.parametrize('stages,paper', TABLE3)
def test_attention_stages_match_table3_params(stages, paper):
    model = _meta_model(depth=50, attention_stages=stages)
    assert abs((_count(model) + FC_HEAD) / 1e6 - paper) < 0.1
    for index, use_attention in enumerate(stages):
        block = getattr(model, f'layer{index + 1}')[0]
        assert isinstance(block.conv2, SASAttention) == use_attention


@pytest.mark.parametrize('depth', [26, 38, 50])
@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_output_shapes(depth, stem):
    model = SASAResNet(depth, stem=stem, base_channels=8, kernel_size=3,
                       num_heads=2)
    model.eval()
    blocks = SASAResNet.arch_settings[depth][1]
    assert [len(getattr(model, f'layer{i + 1}')) for i in range(4)] == list(
        blocks)
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 33, 47))
    # Odd sizes round up at every stride-2 step, like ResNet.
    assert [tuple(o.shape) for o in outs] == [(1, 32, 9, 12), (1, 64, 5, 6),
                                              (1, 128, 3, 3), (1, 256, 2, 2)]


@pytest.mark.parametrize('out_indices', [(0, ), (3, ), (1, 2), (0, 2, 3),
                                         3, 0])
def test_out_indices(out_indices):
    model = SASAResNet(26, base_channels=8, kernel_size=3, num_heads=2,
                       out_indices=out_indices)
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 32, 32))
    assert isinstance(outs, tuple)
    if isinstance(out_indices, int):  # one stage, as TwinsPCPVT takes it
        out_indices = (out_indices, )
    channels = [32, 64, 128, 256]
    assert [o.shape[1] for o in outs] == [channels[i] for i in out_indices]
    assert [o.shape[-1] for o in outs] == [8 // 2**i for i in out_indices]


def test_default_is_full_width_with_7x7_windows():
    model = _meta_model(depth=26)
    block = model.layer2[0]
    assert isinstance(block, SASABottleneck)
    attn = block.conv2
    assert (attn.kernel_size, attn.num_heads, attn.stride) == (7, 8, 2)
    assert attn.in_channels == attn.out_channels == 128
    assert model.layer1[0].conv2.stride == 1
    # The residual keeps ResNet's strided 1x1 projection.
    assert block.downsample[0].stride == (2, 2)


def test_stride_two_block_attends_then_pools():
    model = SASAResNet(26, base_channels=8, kernel_size=3, num_heads=2)
    block = model.layer2[0].eval()
    x = torch.rand(1, 32, 7, 9)
    with torch.no_grad():
        y = block.relu(block.norm1(block.conv1(x)))
        attn = block.conv2
        dense = SASAttention(attn.in_channels, attn.out_channels, 3, 2)
        dense.load_state_dict(attn.state_dict())
        expected = F.avg_pool2d(dense(y), 2, 2, ceil_mode=True)
        assert torch.allclose(attn(y), expected, atol=1e-6)
        assert block(x).shape == (1, 64, 4, 5)


def test_attention_stem_module():
    model = _meta_model(depth=26, stem='attention')
    assert isinstance(model.stem, SASAStem)
    assert (model.stem.num_heads, model.stem.block_size,
            model.stem.num_mixtures) == (4, 4, 4)
    assert not hasattr(model, 'conv1')


def test_frozen_stages_and_norm_eval():
    for stem in ('conv', 'attention'):
        model = SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                           num_heads=2, frozen_stages=1, norm_eval=False)
        model.train()
        stem_module = model.stem if stem == 'attention' else model.conv1
        assert all(not p.requires_grad for p in stem_module.parameters())
        assert all(not p.requires_grad for p in model.layer1.parameters())
        assert all(not m.training for m in model.layer1.modules())
        assert all(p.requires_grad for p in model.layer2.parameters())
        assert model.layer2.training

    model = SASAResNet(26, base_channels=8, kernel_size=3, num_heads=2,
                       norm_eval=True)
    assert model.train() is model and model.eval() is model  # chainable
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)


def test_with_cp_matches_and_trains():
    torch.manual_seed(1)
    kwargs = dict(base_channels=8, kernel_size=3, num_heads=2,
                  norm_eval=False)
    plain = SASAResNet(26, **kwargs)
    ckpt = SASAResNet(26, with_cp=True, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out_plain = plain(x)[-1]
    out_ckpt = ckpt(x)[-1]
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    out_ckpt.sum().backward()
    assert all(p.grad is not None for p in ckpt.parameters()
               if p.requires_grad)


def test_gradients_reach_every_parameter():
    model = SASAResNet(26, stem='attention', base_channels=8,
                       kernel_size=3, num_heads=2, norm_eval=False)
    model.init_weights()
    # zero_init_residual starts norm3 at 0, which blocks the gradients of
    # the layers before it; give the norms a start of 1 for this check.
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.weight.data.fill_(1.0)
    outs = model(torch.rand(2, 3, 30, 33))
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_default_init_zeroes_the_last_norm():
    model = SASAResNet(26, base_channels=8, kernel_size=3, num_heads=2)
    model.init_weights()
    assert torch.all(model.layer1[0].norm3.weight == 0)
    assert torch.all(model.layer1[0].norm1.weight == 1)


def test_build_from_mmdet_registry():
    model = MMDET_MODELS.build(
        dict(type='mmtwins.SASAResNet', depth=26, stem='attention',
             base_channels=8, kernel_size=3, num_heads=2))
    assert isinstance(model, SASAResNet)


@pytest.mark.parametrize('kwargs,message', [
    (dict(depth=34), 'depth must be one of'),
    (dict(depth=101), 'depth must be one of'),
    (dict(stem='deep'), 'stem must be one of'),
    (dict(attention_stages=(True, True, True)), '4 bools'),
    (dict(attention_stages=(1, 1, 1, 1)), '4 bools'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(out_indices=()), 'out_indices'),
    (dict(out_indices=4), 'out_indices'),
    (dict(out_indices=True), 'out_indices'),
    (dict(out_indices='0'), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(num_heads=3), 'divisible by num_heads'),
    (dict(kernel_size=6), 'positive odd'),
])
def test_bad_arguments_raise(kwargs, message):
    args = dict(depth=26, base_channels=8, kernel_size=3, num_heads=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SASAResNet(**args)


# --------------------------------------------------------------- the stem
def _stem_reference(stem, x):
    """Block-by-block attention with explicit loops, for SASAStem.attend."""
    batch, _, height, width = x.shape
    size, heads, dim = stem.block_size, stem.num_heads, stem.head_dim
    half = dim // 2
    q = F.conv2d(x, stem.query_conv.weight) * stem.scale
    k = F.conv2d(x, stem.key_conv.weight)
    mixtures = stem.value_conv.weight.view(stem.num_mixtures, heads * dim,
                                           -1)
    weights = stem.mixture_weights()  # (size, size, M)
    rel_h = stem.rel_h.view(-1, heads, half)
    rel_w = stem.rel_w.view(-1, heads, half)
    out = torch.zeros(batch, heads * dim, height, width, dtype=x.dtype)
    for top in range(0, height, size):
        for left in range(0, width, size):
            pixels = [(i, j) for i in range(top, min(top + size, height))
                      for j in range(left, min(left + size, width))]
            values = torch.stack([
                torch.einsum('m,moi,bi->bo', weights[i - top, j - left],
                             mixtures, x[:, :, i, j]) for i, j in pixels
            ], dim=-1).view(batch, heads, dim, -1)
            for i, j in pixels:
                qh = q[:, :, i, j].view(batch, heads, dim)
                logits = []
                for a, b in pixels:
                    kh = k[:, :, a, b].view(batch, heads, dim)
                    r = torch.cat([rel_h[a - i + size - 1],
                                   rel_w[b - j + size - 1]], dim=-1)
                    logits.append((qh * (kh + r)).sum(-1))
                probs = torch.stack(logits, -1).softmax(-1)
                out[:, :, i, j] = torch.einsum('bhn,bhdn->bhd', probs,
                                               values).reshape(batch, -1)
    return out


@pytest.mark.parametrize('height,width', [(8, 8), (6, 7)])
def test_stem_matches_block_reference(height, width):
    stem = SASAStem(3, 16, num_heads=4, num_mixtures=3).double()
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    assert torch.allclose(stem.attend(x), _stem_reference(stem, x),
                          atol=1e-10)


def test_stem_output_and_padding():
    stem = SASAStem(3, 16, num_heads=4).double().eval()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    out = stem(x)
    assert out.shape == (2, 16, 2, 2)
    # Pixels beyond the image do not exist: whatever a larger image holds
    # there cannot change the outputs of the blocks cut by the border.
    padded = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 10
    padded[:, :, :6, :7] = x
    inside = stem.attend(padded)[:, :, :6, :7]
    assert not torch.allclose(inside, stem.attend(x))
    assert torch.allclose(stem.attend(x), _stem_reference(stem, x),
                          atol=1e-10)
    expected = F.max_pool2d(stem.norm(stem.attend(x)), 4, 4, ceil_mode=True)
    assert torch.allclose(out, expected)


def test_stem_mixture_weights_are_convex():
    stem = SASAStem(3, 16, num_heads=4, num_mixtures=5)
    weights = stem.mixture_weights()
    assert weights.shape == (4, 4, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 4))


@pytest.mark.parametrize('kwargs,message', [
    (dict(out_channels=18), 'divisible by num_heads'),
    (dict(out_channels=12, num_heads=4), 'must be even'),
    (dict(num_mixtures=0), 'num_mixtures must be a positive int'),
    (dict(block_size=0), 'block_size must be a positive int'),
])
def test_stem_bad_arguments_raise(kwargs, message):
    args = dict(in_channels=3, out_channels=16, num_heads=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SASAStem(**args)


def test_stem_bad_input_raises():
    with pytest.raises(ValueError, match=r'expects \(B, 3, H, W\)'):
        SASAStem(3, 16)(torch.rand(1, 1, 8, 8))


# ------------------------------------------- empty batches, dtypes, errors
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_empty_batch_gives_empty_outputs(stem, training):
    model = SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                       num_heads=2)
    model.train(training)  # norm_eval=True: BatchNorm stays in eval
    x = torch.randn(0, 3, 50, 37, requires_grad=training)
    outs = model(x)
    expected = [(0, 32, 13, 10), (0, 64, 7, 5), (0, 128, 4, 3),
                (0, 256, 2, 2)]
    assert [tuple(out.shape) for out in outs] == expected
    if training:
        sum(out.sum() for out in outs).backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_input_dtype_mismatch_is_one_line(stem, dtype):
    model = SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                       num_heads=2)
    model.eval()
    with pytest.raises(TypeError, match='has torch.float32 parameters') as e:
        model(torch.randn(1, 3, 32, 32, dtype=dtype))
    assert '\n' not in str(e.value)
    # Casting the model instead works (float64 here; fp16 convs need
    # a GPU or autocast on CPU).
    if dtype == torch.float64:
        outs = model.to(dtype)(torch.randn(1, 3, 32, 32, dtype=dtype))
        assert outs[-1].dtype == dtype


@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_integer_input_is_told_to_become_float(stem):
    model = SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                       num_heads=2)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(TypeError) as error:
        model(image)
    message = str(error.value)
    assert 'convert the input to float (x.to(torch.float32)' in message
    assert 'model.to' not in message and '\n' not in message


@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_bfloat16_autocast_runs(stem):
    """Under CPU autocast the convs cast the fp32 input; the op follows."""
    model = SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                       num_heads=2)
    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 32, 32))
    assert all(torch.isfinite(out.float()).all() for out in outs)


def test_bad_input_is_one_line():
    model = SASAResNet(26, base_channels=8, kernel_size=3, num_heads=2)
    for x in (torch.randn(1, 1, 32, 32), torch.randn(3, 32, 32)):
        with pytest.raises(ValueError, match=r'expects \(B, 3, H, W\)'):
            model(x)


@pytest.mark.parametrize('kwargs,message', [
    (dict(kernel_size=4), 'positive odd'),
    (dict(kernel_size=0), 'positive odd'),
    (dict(num_heads=3), 'divisible by num_heads'),
    (dict(num_heads=8), 'must be even'),
    (dict(num_heads=0), 'num_heads must be a positive int'),
])
def test_bad_attention_arguments_are_one_line(kwargs, message):
    args = dict(depth=26, base_channels=8, kernel_size=3, num_heads=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as error:
        SASAResNet(**args)
    assert '\n' not in str(error.value)
