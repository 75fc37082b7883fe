"""LSA padding modes and GSA against explicit reference implementations."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from mmtwins.models.layers import (
    GlobalSubsampledAttention,
    LocallyGroupedAttention,
    PositionEncodingGenerator,
    TwinsBlock,
    lean_norm,
)

# (H, W) token maps for window 7: no padding, one side only, both sides.
NO_PAD = [(14, 14), (7, 21)]
ONE_SIDE = [(14, 16), (16, 14), (9, 7)]
BOTH = [(16, 18), (9, 10)]


def reference_lsa(attn, x, hw, mask_padded):
    """Window attention written out with explicit softmax, one window at a
    time; padded tokens are zero vectors *before* qkv (so they carry the
    bias), and optionally masked out as keys."""
    b, n, c = x.shape
    h, w = hw
    ws, heads = attn.window_size, attn.num_heads
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    grid = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    grid[:, :h, :w] = x.view(b, h, w, c)
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True
    out = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    d = c // heads
    for r in range(0, hp, ws):
        for s in range(0, wp, ws):
            win = grid[:, r:r + ws, s:s + ws].reshape(b, ws * ws, c)
            keep = valid[r:r + ws, s:s + ws].reshape(ws * ws)
            q, k, v = attn.qkv(win).view(b, ws * ws, 3, heads,
                                         d).permute(2, 0, 3, 1, 4)
            logits = q @ k.transpose(-1, -2) * d**-0.5
            if mask_padded:
                logits = logits.masked_fill(~keep, float('-inf'))
            o = logits.softmax(-1) @ v
            out[:, r:r + ws, s:s + ws] = o.transpose(1, 2).reshape(
                b, ws, ws, c)
    return attn.proj(out[:, :h, :w].reshape(b, n, c))


def make_lsa(mode):
    attn = LocallyGroupedAttention(32, 4, window_size=7, pad_mode=mode)
    for p in attn.parameters():  # non-zero biases make padding visible
        torch.nn.init.normal_(p, std=0.3)
    return attn.eval()


@pytest.mark.parametrize('hw', NO_PAD + ONE_SIDE + BOTH)
def test_lsa_mask_mode_ignores_padding(hw):
    attn = make_lsa('mask')
    x = torch.randn(2, hw[0] * hw[1], 32)
    ref = reference_lsa(attn, x, hw, mask_padded=True)
    torch.testing.assert_close(attn(x, hw), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('hw', NO_PAD + ONE_SIDE + BOTH)
def test_lsa_zero_mode_matches_unmasked_padding(hw):
    attn = make_lsa('zero')
    x = torch.randn(2, hw[0] * hw[1], 32)
    ref = reference_lsa(attn, x, hw, mask_padded=False)
    torch.testing.assert_close(attn(x, hw), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('hw', ONE_SIDE + BOTH)
def test_lsa_modes_differ_where_they_should(hw):
    x = torch.randn(1, hw[0] * hw[1], 32)
    zero, mask, mmseg = make_lsa('zero'), make_lsa('mask'), make_lsa('mmseg')
    mask.load_state_dict(zero.state_dict())
    mmseg.load_state_dict(zero.state_dict())
    assert not torch.allclose(zero(x, hw), mask(x, hw), atol=1e-3)
    # mmseg masks only when both sides are padded.
    expected = mask if hw in BOTH else zero
    torch.testing.assert_close(mmseg(x, hw), expected(x, hw))


@pytest.mark.parametrize('hw', NO_PAD + ONE_SIDE + BOTH)
def test_lsa_mmseg_mode_matches_mmseg(hw):
    from mmseg.models.backbones.twins import LocallyGroupedSelfAttention
    ours = make_lsa('mmseg')
    theirs = LocallyGroupedSelfAttention(
        32, 4, qkv_bias=True, window_size=7).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, hw[0] * hw[1], 32)
    torch.testing.assert_close(ours(x, hw), theirs(x, hw), atol=1e-5,
                               rtol=1e-5)


def test_lsa_mask_is_cached_per_size():
    attn = make_lsa('mask')
    x = torch.randn(1, 16 * 18, 32)
    attn(x, (16, 18))
    mask = attn._masks[(1, 16, 18, x.device)]
    attn(x, (16, 18))
    assert attn._masks[(1, 16, 18, x.device)] is mask
    assert 'masks' not in ''.join(attn.state_dict())


@pytest.mark.parametrize('sr,hw', [(1, (5, 6)), (2, (9, 11)), (4, (8, 13))])
def test_gsa_matches_explicit_attention(sr, hw):
    attn = GlobalSubsampledAttention(32, 4, sr_ratio=sr).eval()
    b, (h, w), c = 2, hw, 32
    x = torch.randn(b, h * w, c)
    src = x
    if sr > 1:  # the sub-sampling conv floors: trailing rows/cols dropped
        fmap = x.transpose(1, 2).reshape(b, c, h, w)
        src = attn.norm(F.conv2d(fmap, attn.sr.weight, attn.sr.bias,
                                 stride=sr).flatten(2).transpose(1, 2))
    q = attn.q(x).view(b, -1, 4, 8).transpose(1, 2)
    k, v = attn.kv(src).view(b, -1, 2, 4, 8).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) * 8**-0.5).softmax(-1) @ v
    ref = attn.proj(ref.transpose(1, 2).reshape(b, h * w, c))
    torch.testing.assert_close(attn(x, hw), ref, atol=1e-5, rtol=1e-5)


def test_peg_is_residual_depthwise_conv():
    peg = PositionEncodingGenerator(8)
    x = torch.randn(2, 5 * 7, 8)
    fmap = x.transpose(1, 2).reshape(2, 8, 5, 7)
    ref = (peg.proj[0](fmap) + fmap).flatten(2).transpose(1, 2)
    torch.testing.assert_close(peg(x, (5, 7)), ref)
    assert peg.proj[0].groups == 8


def test_lsa_rejects_bad_arguments():
    with pytest.raises(ValueError, match='unknown lsa pad mode'):
        LocallyGroupedAttention(32, 4, pad_mode='reflect')
    with pytest.raises(ValueError, match='not divisible'):
        LocallyGroupedAttention(30, 4)


@pytest.mark.parametrize('window_size,lsa_pad,hw', [
    (1, 'mask', (10, 12)), (7, 'mask', (10, 12)), (7, 'zero', (10, 12)),
    (7, 'mmseg', (14, 9)), (7, 'mask', (14, 7))])
def test_block_lean_paths_match_plain_modules(window_size, lsa_pad, hw,
                                             monkeypatch):
    """The memory-lean autograd functions (norm2+MLP, and norm1+windows+qkv
    for LSA) are exact (float64), gradients included."""
    calls = []
    window_fn = lean_norm.NormWindowLinearFunction.apply
    monkeypatch.setattr(lean_norm.NormWindowLinearFunction, 'apply',
                        lambda *a: calls.append(1) or window_fn(*a))
    block = TwinsBlock(32, 4, 4, sr_ratio=2, window_size=window_size,
                       lsa_pad=lsa_pad)
    block = block.double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.double,
                    requires_grad=True)
    inputs = [x, *block.parameters()]
    assert block._lean_mlp(x)
    out = block(x, hw)
    grad = torch.randn_like(out)
    lean = torch.autograd.grad(out, inputs, grad)
    assert len(calls) == (window_size > 1)
    mid = x + block.attn(block.norm1(x), hw)
    plain_out = mid + block.mlp(block.norm2(mid))
    plain = torch.autograd.grad(plain_out, inputs, grad)
    torch.testing.assert_close(out, plain_out, rtol=0, atol=1e-12)
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with torch.no_grad():
        assert not block._lean_mlp(x)


@pytest.mark.parametrize('window_size', [1, 7])
def test_lean_functions_under_mixed_precision(window_size):
    """Under autocast (bf16 on the CPU standing in for CUDA AMP, which no
    test machine here has) the lean functions run, take half inputs next to
    fp32 parameters, and give the plain modules' gradients to bf16
    precision, in every parameter's own dtype."""
    torch.manual_seed(0)
    block = TwinsBlock(32, 4, 4, sr_ratio=2, window_size=window_size)
    hw = (10, 12)
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.bfloat16,
                    requires_grad=True)
    norm1, norm2, mlp = block.norm1, block.norm2, block.mlp
    params = list(block.parameters())

    def lean():
        if window_size > 1:
            windows = partial(block.attn._windows, hw_shape=hw)
            qkv = lean_norm.NormWindowLinearFunction.apply(
                x, norm1.weight, norm1.bias, norm1.eps, windows,
                block.attn.qkv.weight, block.attn.qkv.bias)
        else:
            qkv = torch.zeros(())
        out = lean_norm.NormMlpFunction.apply(
            x, norm2.weight, norm2.bias, norm2.eps, mlp.fc1.weight,
            mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
        return qkv.float().sum() + out.float().square().sum()

    def plain():
        qkv = torch.zeros(())
        if window_size > 1:
            qkv = block.attn.qkv(block.attn._windows(norm1(x), hw))
        out = mlp.fc2(F.gelu(mlp.fc1(norm2(x))))
        return qkv.float().sum() + out.float().square().sum()

    grads = {}
    for name, fn in (('lean', lean), ('plain', plain)):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = fn()
        grads[name] = torch.autograd.grad(loss, [x, *params],
                                          allow_unused=True)
    for (a, b), t in zip(zip(grads['lean'], grads['plain']), [x, *params]):
        if b is None:
            continue
        assert a.dtype == t.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05,
                                   atol=0.05 * b.abs().max().item())
