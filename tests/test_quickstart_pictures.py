"""The SASA quickstart config trains and predicts, and the quickstart's
pictures (curves, galleries) come out as PNGs of the expected size, linked
from report.md. A few iterations on a tiny mini set, through the real
tools."""
import json
import os
import os.path as osp
import struct

import pytest
import torch
from tools_helpers import REPO, SEG_CFG, load_tool, make_mini, run_tool

SASA_CFG = osp.join(REPO, 'configs', 'quickstart',
                    'retinanet_sasa_r26_attnstem_attnhead_mini_coco.py')
CLASSES = ['circle', 'square', 'triangle']


def png_size(path: str):
    """(width, height) from a PNG's header; fails for anything else."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    assert head[12:16] == b'IHDR'
    return struct.unpack('>II', head[16:24])


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 4, 2)


@pytest.fixture(scope='module')
def sasa_run(tmp_path_factory, mini):
    """Train the SASA quickstart config for 2 iterations (1 epoch) and
    test it; returns (config, work dir, checkpoint)."""
    tmp = str(tmp_path_factory.mktemp('sasa'))
    root = osp.join(mini, 'coco') + '/'
    loader = (f'dict(batch_size=2, num_workers=0, persistent_workers=False, '
              f'dataset=dict(data_root={root!r}))')
    cfg = osp.join(tmp, 'sasa.py')
    with open(cfg, 'w') as f:
        f.write(f"""_base_ = {SASA_CFG!r}
train_dataloader = {loader}
val_dataloader = {loader}
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={root + 'annotations/instances_val2017.json'!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
model = dict(test_cfg=dict(score_thr=0.0))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")
    work = osp.join(tmp, 'work')
    _ok(run_tool(['tools/train.py', cfg, '--work-dir', work]))
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    _ok(run_tool(['tools/test.py', cfg, ckpt, '--work-dir',
                  osp.join(work, 'test')]))
    return cfg, work, ckpt


def test_sasa_config_is_all_attention():
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from mmtwins.models.layers.sasa_attention import SASAttention
    from mmtwins.models.layers.sasa_stem import SASAStem
    cfg = Config.fromfile(SASA_CFG)
    assert cfg.model.backbone.stem == 'attention'
    assert cfg.model.neck.type == 'mmtwins.SASAFPN'
    assert cfg.model.bbox_head.type == 'mmtwins.SASARetinaHead'
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone.stem, SASAStem)
    # No spatial (k > 1) convolution anywhere: every one is attention.
    spatial = [n for n, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
               and 'retina_' not in n]
    assert spatial == []
    assert sum(isinstance(m, SASAttention) for m in model.modules()) > 10


@pytest.mark.slow
def test_sasa_trains_and_predicts(sasa_run, mini, tmp_path):
    cfg, work, ckpt = sasa_run
    with open(osp.join(work, 'test', 'metrics.json')) as f:
        report = json.load(f)
    assert 0 <= report['summary']['bbox_mAP'] <= 100
    out = str(tmp_path / 'infer')
    folder = osp.join(mini, 'coco', 'val2017')
    load_tool('infer.py').main([cfg, ckpt, folder, '--out-dir', out])
    for name in sorted(os.listdir(folder)):
        with open(osp.join(out, 'preds', name[:-4] + '.json')) as f:
            pred = json.load(f)
        # The Runner's checkpoint carries the mini set's classes.
        assert pred['scores'] and set(pred['classes']) <= set(CLASSES)
        assert osp.isfile(osp.join(out, 'vis', name))


@pytest.mark.slow
def test_curves_gallery_and_report(sasa_run, tmp_path):
    cfg, work, ckpt = sasa_run
    curves = str(tmp_path / 'detection_curves.png')
    _ok(run_tool(['tools/analysis/analyze_logs.py', 'plot_curve', work,
                  '--legend', 'detection', '--out', curves]))
    # Two panels (loss, coco/bbox_mAP) of 5 x 4 inches at 100 dpi.
    assert png_size(curves) == (1000, 400)
    gallery = str(tmp_path / 'detection_gallery.png')
    _ok(run_tool(['tools/analysis/gallery.py', cfg, ckpt, '--out', gallery,
                  '--num', '2', '--cols', '1', '--scale', '2']))
    # 2 rows of (ground truth | prediction) 128-pixel images at scale 2.
    assert png_size(gallery) == (2 * 256, 2 * 256 + 8)
    report = str(tmp_path / 'report' / 'report.md')
    _ok(run_tool(['tools/analysis/report.py', osp.join(work, 'test'),
                  '--out', report, '--figures', curves, gallery]))
    with open(report) as f:
        text = f.read()
    assert '## Pictures' in text
    assert '![Detection curves](../detection_curves.png)' in text
    assert '![Detection gallery](../detection_gallery.png)' in text


def test_segmentation_gallery(mini, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(SEG_CFG)
    cfg.test_dataloader.dataset.data_root = osp.join(
        mini, 'ade', 'ADEChallengeData2016')
    config = str(tmp_path / 'seg.py')
    cfg.dump(config)
    init_default_scope('mmseg')
    ckpt = str(tmp_path / 'seg.pth')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, ckpt)
    gallery_tool = load_tool('analysis/gallery.py')
    out = str(tmp_path / 'segmentation_gallery.png')
    img = gallery_tool.draw_gallery(config, ckpt, out, num=2, cols=2,
                                    scale=1.5)
    # 1 row of 2 (ground truth | prediction) pairs of 192-pixel images.
    assert png_size(out) == (2 * 384 + 8, 192)
    assert img.shape == (192, 2 * 384 + 8, 3)
    assert (img[:, 384:392] == 255).all()  # the white gap
    # Ground truth and the random model's prediction differ.
    assert not (img[:, :192] == img[:, 192:384]).all()


def test_tile_sizes():
    import numpy as np
    tile = load_tool('analysis/gallery.py').tile
    cells = [np.zeros((10, 20, 3), np.uint8)] * 3
    out = tile(cells, cols=2, gap=4)
    assert out.shape == (24, 44, 3)
    assert (out[14:, 24:] == 255).all()  # no third-row cell: white
    assert (out[:10, :20] == 0).all() and (out[14:, :20] == 0).all()
