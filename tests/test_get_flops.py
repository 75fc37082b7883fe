"""tools/analysis/get_flops.py: counts, the SDPA rule and its CLI errors."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from _zoo_helpers import REPO, param_count, stem
from mmengine.analysis import FlopAnalyzer

SCRIPT = os.path.join(REPO, 'tools', 'analysis', 'get_flops.py')


def _module():
    spec = importlib.util.spec_from_file_location('get_flops', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GET_FLOPS = _module()


pytestmark = pytest.mark.usefixtures('single_thread')


class _Attention(torch.nn.Module):

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, q, k, v):
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1]**-0.5).softmax(-1)
        return attn @ v


def test_sdpa_counts_like_explicit_matmuls():
    q = torch.randn(2, 3, 10, 8)
    k = torch.randn(2, 3, 6, 8)
    v = torch.randn(2, 3, 6, 5)
    explicit = FlopAnalyzer(_Attention(False), (q, k, v)).total()
    fused = FlopAnalyzer(_Attention(True), (q, k, v))
    fused.set_op_handle(
        **{'aten::scaled_dot_product_attention': GET_FLOPS.sdpa_flop_jit})
    assert fused.total() == explicit == 2 * 3 * 10 * 6 * (8 + 5)


class _SASA(torch.nn.Module):

    def forward(self, q, k, v, rel_h, rel_w):
        from mmtwins.ops import sasa_attention
        return sasa_attention(q, k, v, rel_h, rel_w)


def test_sasa_attention_is_counted():
    heads, dim, size, window = 2, 8, (5, 6), 3
    qkv = [torch.randn(1, heads, dim, *size) for _ in range(3)]
    rel = [torch.randn(window, heads, dim // 2) for _ in range(2)]
    analyzer = FlopAnalyzer(_SASA(), (*qkv, *rel))
    analyzer.set_op_handle(**GET_FLOPS.EXTRA_HANDLES)
    with torch.no_grad():
        total = analyzer.total()
    assert total == heads * 5 * 6 * dim * (2 * window**2 + window)


def test_sasa_stand_in_counts_like_the_real_op():
    """measure() traces SASA through a one-node stand-in; same count."""
    from mmtwins.models.layers import SASAttention

    layer = SASAttention(16, 16, kernel_size=3, num_heads=2).eval()
    x = torch.randn(1, 16, 6, 7)
    with torch.no_grad():
        real = FlopAnalyzer(layer, (x, ))
        real.set_op_handle(**GET_FLOPS.EXTRA_HANDLES)
        expected = real.total()
        with GET_FLOPS._sasa_traced_as_one_op():
            stand_in = FlopAnalyzer(layer, (x, ))
            stand_in.set_op_handle(**GET_FLOPS.EXTRA_HANDLES)
            assert stand_in.total() == expected
            assert 'PythonOp._SASAFlops' in stand_in.by_operator()
    assert 'sasa_attention' in real.by_operator()  # mmtwins::sasa_attention
    # 2 heads x 42 pixels x 8 dims x (2 * 9 + 3), plus the 1x1 projections
    assert expected >= 2 * 42 * 8 * 21


@pytest.mark.parametrize('config,shape,padded', [
    ('configs/segmentation/fpn_twins_pcpvt_s_80k_ade20k_512x512.py',
     (64, 96), (64, 96)),
    ('configs/detection/mask_rcnn_twins_svt_s_1x_coco.py', (50, 70),
     (64, 96)),
])
def test_measure_detection_and_segmentation(config, shape, padded):
    cfg = GET_FLOPS.load_config(os.path.join(REPO, config))
    result = GET_FLOPS.measure(cfg, shape)
    assert result['input_shape'] == padded  # detection pads to 32
    assert result['params'] == param_count(stem(config))
    # Attention is counted: far more than the patch-embedding convs alone.
    assert result['flops'] > 0.1e9


def test_main_prints_counts_and_applies_cfg_options(capsys):
    GET_FLOPS.main([
        'configs/segmentation/fpn_twins_pcpvt_s_80k_ade20k_512x512.py',
        '--shape', '32', '32', '--cfg-options', 'model.backbone.arch=base'])
    out = capsys.readouterr().out
    assert 'Input shape: 32x32 (network input 32x32)' in out
    assert 'Flops:' in out
    base = float(out.split('Params:')[1].split()[0])
    assert 47.0 < base < 48.5  # PCPVT-B FPN (paper 48.1 with its dead head)


def test_default_shape_is_the_papers(monkeypatch, capsys):
    shapes = []
    monkeypatch.setattr(
        GET_FLOPS, 'measure', lambda cfg, shape: shapes.append(shape) or dict(
            params=1, flops=1, input_shape=shape))
    for config in ('configs/detection/retinanet_twins_pcpvt_s_1x_coco.py',
                   'configs/segmentation/fpn_twins_pcpvt_s_80k_ade20k_'
                   '512x512.py'):
        GET_FLOPS.main([config])
    assert shapes == [(600, 800), (512, 512)]
    assert 'Input shape: 600x800' in capsys.readouterr().out


def test_missing_config_is_one_clear_line():
    out = subprocess.run(
        [sys.executable, SCRIPT, 'configs/detection/no_such_config.py'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        'get_flops.py: error: config file not found: '
        'configs/detection/no_such_config.py']


def test_bad_shape_is_rejected(capsys):
    with pytest.raises(SystemExit) as err:
        GET_FLOPS.main(['configs/detection/retinanet_twins_pcpvt_s_1x_coco.py',
                        '--shape', '0', '64'])
    assert err.value.code == 2
    assert '--shape needs positive H and W' in capsys.readouterr().err


def test_start_is_quiet():
    """A normal run prints its counts and nothing on stderr (no
    third-party start-up warnings such as pkg_resources')."""
    out = subprocess.run(
        [sys.executable, SCRIPT,
         'configs/segmentation/fpn_sasa_r26_convstem_80k_ade20k_512x512.py',
         '--shape', '64', '64'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'Params:' in out.stdout
    assert out.stderr.strip() == ''
