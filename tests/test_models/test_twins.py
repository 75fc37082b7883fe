"""Twins backbones: shapes, parameter counts, gradients, options, errors."""
import pytest
import torch

from mmtwins.models import TwinsPCPVT, TwinsSVT

ARCHS = [(cls, arch) for cls in (TwinsPCPVT, TwinsSVT)
         for arch in ('small', 'base', 'large')]
# Input sizes whose LSA stage maps (window 7) need no padding, padding on
# one side only, and padding on both sides.
SIZES = {'none': (224, 224), 'one_side': (224, 256), 'both': (64, 96)}
TINY = dict(
    embed_dims=[16, 32, 32, 64],
    depths=[2, 2, 3, 2],
    num_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    sr_ratios=[8, 4, 2, 1])
TINY_SVT = dict(TINY, window_sizes=[7, 7, 7, 7])
TINY_ARCHS = [(TwinsPCPVT, TINY), (TwinsSVT, TINY_SVT)]

# Official ImageNet classifier parameter counts (backbone + final LayerNorm
# + 1000-class head); SVT counted without the dense-task norm_list.
OFFICIAL_PARAMS = {
    (TwinsPCPVT, 'small'): 24_106_216,
    (TwinsPCPVT, 'base'): 43_828_456,
    (TwinsPCPVT, 'large'): 60_989_672,
    (TwinsSVT, 'small'): 24_060_776,
    (TwinsSVT, 'base'): 56_070_952,
    (TwinsSVT, 'large'): 99_271_400,
}


def stage_sizes(h, w):
    sizes = [(h // 4, w // 4)]
    for _ in range(3):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize('cls,arch', ARCHS)
def test_full_arch_shapes(cls, arch):
    model = cls(arch).eval()
    dims = cls.arch_zoo[arch]['embed_dims']
    for name, (h, w) in SIZES.items():
        with torch.no_grad():
            outs = model(torch.rand(1, 3, h, w))
        assert [o.shape for o in outs] == [
            torch.Size([1, d, *hw]) for d, hw in zip(dims, stage_sizes(h, w))
        ], name


@pytest.mark.parametrize('cls,arch', list(OFFICIAL_PARAMS))
def test_param_counts_match_official_classifiers(cls, arch):
    model = cls(arch, norm_after_stage=False)
    last = cls.arch_zoo[arch]['embed_dims'][-1]
    head = 2 * last + last * 1000 + 1000  # final LayerNorm + Linear
    count = sum(p.numel() for p in model.parameters()) + head
    assert count == OFFICIAL_PARAMS[(cls, arch)]


@pytest.mark.parametrize('cls,arch', TINY_ARCHS)
@pytest.mark.parametrize('size', list(SIZES.values()) + [(33, 47), (97, 65)])
def test_tiny_arch_shapes_all_sizes(cls, arch, size):
    outs = cls(arch)(torch.rand(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (2, d, *hw) for d, hw in zip(arch['embed_dims'], stage_sizes(*size))
    ]
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize('out_indices', [(0, ), (1, 3), (0, 1, 2), (3, ),
                                         (0, 1, 2, 3), (-1, )])
def test_out_indices(out_indices):
    model = TwinsSVT(TINY_SVT, out_indices=out_indices)
    outs = model(torch.rand(1, 3, 64, 64))
    wanted = sorted(i % 4 for i in out_indices)
    assert [o.shape[1] for o in outs] == [TINY['embed_dims'][i]
                                          for i in wanted]
    assert model.out_channels == [TINY['embed_dims'][i] for i in wanted]
    # Stages after the last output are not built: no unused parameters.
    assert len(model.blocks) == wanted[-1] + 1


@pytest.mark.parametrize('cls,arch', TINY_ARCHS)
@pytest.mark.parametrize('with_cp', [False, True])
def test_every_parameter_gets_a_gradient(cls, arch, with_cp):
    model = cls(arch, with_cp=with_cp)
    model.init_weights()
    outs = model(torch.rand(2, 3, 64, 96))
    sum(o.mean() for o in outs).backward()
    params = dict(model.named_parameters())
    no_grad = [n for n, p in params.items()
               if p.grad is None or not p.grad.abs().sum()]
    assert not no_grad


@pytest.mark.parametrize('with_cp', [True, 'selective'])
def test_with_cp_matches_plain_forward_and_grads(with_cp):
    plain = TwinsSVT(TINY_SVT)
    ckpt = TwinsSVT(TINY_SVT, with_cp=with_cp)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 64, 64)
    for model in (plain, ckpt):
        sum(o.sum() for o in model(x)).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_drop_path_schedule_is_linear_and_once_per_branch():
    model = TwinsPCPVT(TINY, drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.)
             for stage in model.blocks for b in stage]
    torch.testing.assert_close(torch.tensor(rates),
                               torch.linspace(0, 0.3, sum(TINY['depths'])))
    block = model.blocks[3][1]
    names = [n for n, m in block.named_modules()
             if type(m).__name__ == 'DropPath']
    assert names == ['drop_path']


def test_frozen_stages():
    model = TwinsSVT(TINY_SVT, frozen_stages=1)
    model.train()
    for i in range(4):
        params = [*model.patch_embeds[i].parameters(),
                  *model.blocks[i].parameters(),
                  *model.pos_block[i].parameters(),
                  *model.norm_list[i].parameters()]
        assert all(p.requires_grad == (i > 1) for p in params)
        assert model.blocks[i].training == (i > 1)


def test_norm_eval_puts_batchnorm_in_eval():
    model = TwinsPCPVT(TINY, norm_eval=True)
    model.blocks[0].append(torch.nn.BatchNorm1d(4))  # a customised variant
    model.train()
    assert not model.blocks[0][-1].training
    assert model.blocks[1].training


def test_layer_norm_eps_per_site():
    model = TwinsSVT(TINY_SVT)
    block = model.blocks[0][1]
    assert block.norm1.eps == block.norm2.eps == 1e-6
    assert model.norm_list[0].eps == 1e-6
    assert model.patch_embeds[0].norm.eps == 1e-5
    assert block.attn.norm.eps == 1e-5  # GSA sub-sampling norm
    assert TwinsSVT(TINY_SVT, norm_eps=1e-5).blocks[0][0].norm1.eps == 1e-5


def test_official_key_names():
    keys = set(TwinsSVT('small').state_dict())
    for key in ('patch_embeds.0.proj.weight', 'patch_embeds.0.norm.bias',
                'pos_block.2.proj.0.weight', 'blocks.0.0.attn.qkv.weight',
                'blocks.0.0.attn.proj.weight', 'blocks.0.1.attn.q.weight',
                'blocks.0.1.attn.kv.bias', 'blocks.0.1.attn.sr.weight',
                'blocks.0.1.attn.norm.weight', 'blocks.3.3.mlp.fc2.bias',
                'norm_list.3.weight'):
        assert key in keys
    pcpvt = set(TwinsPCPVT('small').state_dict())
    # Stage 4 has sr_ratio 1: no sub-sampling conv or norm.
    assert 'blocks.3.0.attn.sr.weight' not in pcpvt
    assert 'blocks.2.0.attn.sr.weight' in pcpvt
    assert not any(k.startswith(('head.', 'norm.')) for k in pcpvt)


def test_svt_alternates_lsa_and_gsa():
    model = TwinsSVT('small')
    kinds = [[type(b.attn).__name__[0] for b in stage]
             for stage in model.blocks]
    assert kinds == [['L', 'G'], ['L', 'G'], ['L', 'G'] * 5, ['L', 'G'] * 2]


@pytest.mark.parametrize('rounding,expected', [('floor', [170, 85, 42, 21]),
                                               ('ceil', [171, 86, 43, 22])])
def test_patch_rounding(rounding, expected):
    model = TwinsPCPVT(TINY, patch_rounding=rounding)
    outs = model(torch.rand(1, 3, 64, 683))
    assert [o.shape[-1] for o in outs] == expected


def test_arch_aliases():
    assert TwinsSVT._parse_arch('b') == TwinsSVT.arch_zoo['base']
    assert TwinsPCPVT._parse_arch('L')['depths'] == [3, 8, 27, 3]


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match=r"unknown TwinsSVT arch 'huge'.*"
                       r"'base'.*'large'.*'small'"):
        TwinsSVT('huge')


@pytest.mark.parametrize('bad,match', [
    (dict(TINY, depths=[1, 1]), 'one length per stage'),
    ({k: v for k, v in TINY.items() if k != 'depths'}, 'lacks keys'),
    (dict(TINY, window_sizes=[7] * 4), 'unknown keys'),
    (dict(TINY, num_heads=[3, 2, 2, 4]), 'not divisible'),
])
def test_bad_arch_dict(bad, match):
    with pytest.raises(ValueError, match=match):
        TwinsPCPVT(bad)


def test_bad_options():
    with pytest.raises(TypeError, match='lsa_pad applies to TwinsSVT'):
        TwinsPCPVT(TINY, lsa_pad='zero')
    with pytest.raises(ValueError, match='unknown lsa_pad'):
        TwinsSVT(TINY_SVT, lsa_pad='reflect')
    with pytest.raises(ValueError, match='out_indices'):
        TwinsSVT(TINY_SVT, out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        TwinsSVT(TINY_SVT, out_indices=(0, 1), frozen_stages=2)
    with pytest.raises(ValueError, match='patch_rounding'):
        TwinsSVT(TINY_SVT, patch_rounding='round')


def test_bad_inputs():
    model = TwinsSVT(TINY_SVT)
    with pytest.raises(ValueError, match='expects 3 input channels, got 1'):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32 pixels'):
        model(torch.rand(1, 3, 31, 64))
    with pytest.raises(ValueError, match='4-D NCHW'):
        model(torch.rand(3, 64, 64))
    # The minimum size itself works.
    assert model(torch.rand(1, 3, 32, 32))[-1].shape[-2:] == (1, 1)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(lsa_pad='Mask'), ValueError,
     r"unknown lsa_pad 'Mask'; choose one of \['mask', 'zero', 'mmseg'\]"),
    (dict(lsa_pad=None), TypeError, r'lsa_pad must be a str'),
    (dict(norm_eps='1e-6'), TypeError, r'norm_eps must be a number'),
    (dict(norm_eps=0), ValueError, r'norm_eps must be in \(0.0, 1.0\]'),
    (dict(norm_eps=-1e-6), ValueError, r'norm_eps must be in'),
    (dict(drop_path_rate=1.0), ValueError,
     r'drop_path_rate must be in \[0.0, 1.0\), got 1.0'),
    (dict(drop_path_rate=-0.1), ValueError, r'drop_path_rate must be in'),
    (dict(drop_path_rate=float('nan')), ValueError, r'drop_path_rate'),
    (dict(drop_rate=True), TypeError, r'drop_rate must be a number'),
    (dict(attn_drop_rate=2), ValueError, r'attn_drop_rate must be in'),
    (dict(out_indices=4), ValueError, r'out_indices must be stage indices'),
    (dict(out_indices=(0, 0)), ValueError, r'names a stage twice'),
    (dict(out_indices='0123'), TypeError,
     r'out_indices must be an int or a sequence of ints'),
    (dict(out_indices=(0, 1.5)), TypeError, r'out_indices must be an int'),
    (dict(out_indices=()), ValueError, r'out_indices must be stage'),
    (dict(patch_rounding='round'), ValueError,
     r"unknown patch_rounding 'round'; choose one of \['floor', 'ceil'\]"),
    (dict(patch_rounding=1), TypeError, r'patch_rounding must be a str'),
    (dict(in_channels=0), ValueError, r'in_channels must be >= 1'),
    (dict(frozen_stages=1.0), TypeError, r'frozen_stages must be an int'),
    (dict(with_cp='full'), ValueError,
     r"with_cp must be True, False or 'selective', got 'full'"),
])
def test_constructor_arguments_are_validated(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        TwinsSVT(TINY_SVT, **kwargs)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('cls', [TwinsPCPVT, TwinsSVT])
def test_arch_typo_lists_valid_names_in_one_line(cls):
    with pytest.raises(ValueError) as info:
        cls('smal')
    msg = str(info.value)
    assert '\n' not in msg and "'smal'" in msg
    assert all(name in msg for name in ("'small'", "'base'", "'large'"))


def test_out_indices_accepts_an_int():
    model = TwinsPCPVT(TINY, out_indices=-2)
    assert model.out_indices == (2, )
    assert len(model(torch.rand(1, 3, 64, 64))) == 1


@pytest.mark.parametrize('cls,arch', TINY_ARCHS)
@pytest.mark.parametrize('training', [False, True])
def test_empty_batch_gives_empty_maps(cls, arch, training):
    model = cls(arch).train(training)
    outs = model(torch.rand(0, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (0, d, *hw) for d, hw in zip(arch['embed_dims'], stage_sizes(64, 96))
    ]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16,
                                   torch.uint8])
def test_input_dtype_other_than_weights_is_one_clear_line(dtype):
    model = TwinsPCPVT(TINY).eval()
    with pytest.raises(TypeError, match=rf'got a {dtype} input but its '
                       r'weights are torch.float32: cast') as info:
        model(torch.zeros(1, 3, 64, 64, dtype=dtype))
    assert '\n' not in str(info.value)


def test_matching_dtypes_and_autocast_are_accepted():
    model = TwinsPCPVT(TINY).eval().double()
    assert model(torch.rand(1, 3, 64, 64, dtype=torch.float64))[0].dtype \
        == torch.float64
    model = TwinsPCPVT(TINY).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert model(torch.rand(1, 3, 64, 64, dtype=torch.bfloat16))[0] \
            .dtype == torch.bfloat16
