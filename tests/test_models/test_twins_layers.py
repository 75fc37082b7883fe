"""LSA padding modes and GSA against explicit reference implementations."""
import pytest
import torch
import torch.nn.functional as F

from mmtwins.models.layers import (
    GlobalSubsampledAttention,
    LocallyGroupedAttention,
    PositionEncodingGenerator,
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


@pytest.mark.parametrize('hw', NO_PAD + ONE_SIDE + BOTH)
@pytest.mark.parametrize('mode', ['mask', 'zero', 'mmseg'])
def test_lsa_gradients_match_reference(hw, mode):
    """Gradients through the pad/gather window partition equal those of
    the explicit per-window reference (float64)."""
    attn = make_lsa(mode).double()
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.double,
                    requires_grad=True)
    mask_padded = mode == 'mask' or (mode == 'mmseg' and hw in BOTH)
    grad = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.double)
    inputs = [x, *attn.parameters()]
    got = torch.autograd.grad(attn(x, hw), inputs, grad)
    ref = torch.autograd.grad(reference_lsa(attn, x, hw, mask_padded),
                              inputs, grad)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


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
