"""Numerical parity with MMSegmentation 1.2.2's PCPVT/SVT after conversion.

mmseg's implementation is independent (nn.MultiheadAttention for GSA, mmcv
FFN, explicit-softmax LSA with its own mask), so equal outputs check the
architecture, the key conversion and the LSA padding modes together.
"""
import pytest
import torch
from mmseg.models.backbones import PCPVT, SVT

from mmtwins.models import TwinsPCPVT, TwinsSVT
from mmtwins.utils.ckpt_convert import mmseg_to_official, official_to_mmseg

MMSEG_ARGS = {
    'pcpvt': dict(
        embed_dims=[64, 128, 320, 512],
        num_heads=[1, 2, 5, 8],
        mlp_ratios=[8, 8, 4, 4],
        depths=[3, 4, 6, 3],
        sr_ratios=[8, 4, 2, 1],
        qkv_bias=True,
        norm_after_stage=False),
    'svt': dict(
        embed_dims=[64, 128, 256, 512],
        num_heads=[2, 4, 8, 16],
        mlp_ratios=[4, 4, 4, 4],
        depths=[2, 2, 10, 4],
        sr_ratios=[8, 4, 2, 1],
        windiow_sizes=[7, 7, 7, 7],
        qkv_bias=True,
        norm_after_stage=True),
}


_MMSEG = {}


def mmseg_backbone(kind):
    """mmseg's Twins-S with random weights (built once per module run)."""
    if kind not in _MMSEG:
        torch.manual_seed(0)
        model = (PCPVT if kind == 'pcpvt' else SVT)(**MMSEG_ARGS[kind])
        model.init_weights()
        for name, p in model.named_parameters():  # make LN/biases matter
            if name.endswith('bias') or 'norm' in name:
                p.data.normal_(0.5 if name.endswith('weight') else 0., 0.1)
        _MMSEG[kind] = model.eval()
    return _MMSEG[kind]


def build_pair(kind, lsa_pad):
    """mmseg's backbone and ours loaded from its converted weights."""
    theirs = mmseg_backbone(kind)
    extra = {} if kind == 'pcpvt' else dict(lsa_pad=lsa_pad)
    ours = (TwinsPCPVT if kind == 'pcpvt' else TwinsSVT)(
        'small', norm_eps=1e-5, patch_rounding='ceil', **extra)
    ours.load_state_dict(mmseg_to_official(theirs.state_dict()), strict=True)
    return ours.eval(), theirs


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('kind,lsa_pad,size', [
    ('pcpvt', None, (224, 224)),
    # Not a multiple of 32: both round up (patch_rounding='ceil').
    ('pcpvt', None, (96, 133)),
    # 224x256: width pads at every stage, height never (one side only).
    ('svt', 'mmseg', (224, 256)),
    ('svt', 'mmseg', (256, 224)),
    # 64x96: both sides pad at every stage.
    ('svt', 'mmseg', (64, 96)),
    # 224x224: nothing pads, so every mode must agree with mmseg.
    ('svt', 'mmseg', (224, 224)),
    ('svt', 'mask', (224, 224)),
    ('svt', 'zero', (224, 224)),
])
def test_matches_mmseg(kind, lsa_pad, size):
    ours, theirs = build_pair(kind, lsa_pad)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        got, ref = ours(x), theirs(x)
    assert len(got) == len(ref) == 4
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-4


def test_mask_mode_differs_from_mmseg_on_one_sided_padding():
    ours, theirs = build_pair('svt', 'mask')
    x = torch.randn(1, 3, 224, 256)
    with torch.no_grad():
        assert rel_err(ours(x)[0], theirs(x)[0]) > 1e-3


@pytest.mark.parametrize('kind', ['pcpvt', 'svt'])
def test_round_trip_mmseg_mmtwins_mmseg_is_exact(kind):
    _, theirs = build_pair(kind, 'mmseg')
    state = theirs.state_dict()
    back = official_to_mmseg(mmseg_to_official(state))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
