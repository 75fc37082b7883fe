"""The Mask R-CNN and SASA-segmentor quickstart configs train a few
iterations, test and predict through the real tools on a tiny mini set;
the Mask R-CNN gallery draws instance masks, and its reports put mask AP
beside box AP. tools/quickstart.sh refuses a mode it does not know."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from tools_helpers import REPO, load_tool, make_mini, run_tool

MASK_CFG = osp.join(REPO, 'configs', 'quickstart',
                    'mask_rcnn_twins_pcpvt_s_mini_coco.py')
SASA_SEG_CFG = osp.join(REPO, 'configs', 'quickstart',
                        'fpn_sasa_r26_convstem_mini_ade.py')


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 4, 2)


def _loader(root):
    return (f'dict(batch_size=2, num_workers=0, persistent_workers=False, '
            f'dataset=dict(data_root={root!r}))')


def _train_test(tmp, base, body):
    """Write a config inheriting ``base``, train it, test the last
    checkpoint; returns (config, checkpoint, metrics.json content)."""
    cfg = osp.join(tmp, 'cfg.py')
    with open(cfg, 'w') as f:
        f.write(f'_base_ = {base!r}\n{body}')
    work = osp.join(tmp, 'work')
    _ok(run_tool(['tools/train.py', cfg, '--work-dir', work]))
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    test_dir = osp.join(work, 'test')
    _ok(run_tool(['tools/test.py', cfg, ckpt, '--work-dir', test_dir]))
    with open(osp.join(test_dir, 'metrics.json')) as f:
        report = json.load(f)
    with open(osp.join(test_dir, 'report.md')) as f:
        report['markdown'] = f.read()
    return cfg, ckpt, report


@pytest.fixture(scope='module')
def mask_run(tmp_path_factory, mini):
    tmp = str(tmp_path_factory.mktemp('mask_rcnn'))
    root = osp.join(mini, 'coco') + '/'
    return _train_test(tmp, MASK_CFG, f"""
train_dataloader = {_loader(root)}
val_dataloader = {_loader(root)}
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={root + 'annotations/instances_val2017.json'!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
# A few iterations score little; keep every box and mask for the metric.
model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")


@pytest.fixture(scope='module')
def sasa_seg_run(tmp_path_factory, mini):
    tmp = str(tmp_path_factory.mktemp('sasa_seg'))
    root = osp.join(mini, 'ade', 'ADEChallengeData2016')
    return _train_test(tmp, SASA_SEG_CFG, f"""
train_dataloader = {_loader(root)}
val_dataloader = {_loader(root)}
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")


@pytest.mark.slow
def test_mask_rcnn_trains_tests_and_reports_mask_ap(mask_run):
    _, _, report = mask_run
    summary = report['summary']
    for key in ('bbox_mAP', 'segm_mAP', 'segm_mAP_50'):
        assert 0 <= summary[key] <= 100, key
    header = next(line for line in report['markdown'].splitlines()
                  if line.startswith('| Source |'))
    assert '| AP |' in header and '| mask AP |' in header


@pytest.mark.slow
def test_mask_rcnn_predicts_masks(mask_run, mini, tmp_path):
    cfg, ckpt, _ = mask_run
    out = str(tmp_path / 'infer')
    folder = osp.join(mini, 'coco', 'val2017')
    load_tool('infer.py').main([cfg, ckpt, folder, '--out-dir', out,
                                '--score-thr', '0'])
    for name in sorted(os.listdir(folder)):
        with open(osp.join(out, 'preds', name[:-4] + '.json')) as f:
            pred = json.load(f)
        assert len(pred['masks']) == len(pred['bboxes']) > 0
        assert set(pred['classes']) <= {'circle', 'square', 'triangle'}


@pytest.mark.slow
def test_mask_rcnn_gallery_draws_masks(mask_run, mini, tmp_path):
    import mmcv
    cfg, ckpt, _ = mask_run
    gallery = load_tool('analysis/gallery.py')
    img = gallery.draw_gallery(cfg, ckpt, str(tmp_path / 'g.png'), num=1,
                               cols=1, scale=2.0)
    with open(osp.join(mini, 'coco', 'annotations',
                       'instances_val2017.json')) as f:
        coco = json.load(f)
    first = coco['images'][0]
    raw = mmcv.imrescale(
        mmcv.imread(osp.join(mini, 'coco', 'val2017', first['file_name']),
                    channel_order='rgb'), 2.0, interpolation='bilinear')
    assert img.shape == (raw.shape[0], 2 * raw.shape[1], 3)
    gt_half = img[:, :raw.shape[1]]
    anns = [a for a in coco['annotations'] if a['image_id'] == first['id']]
    for ann in anns:
        # mmdet's visualizer outlines every drawn mask in white (the mask
        # colour itself is jittered at random): the shape's outline turns
        # near-white in the ground-truth half, and is not in the image.
        poly = np.asarray(ann['segmentation'][0]).reshape(-1, 2) * 2
        band = np.zeros(raw.shape[:2], np.uint8)
        cv2.polylines(band, [np.round(poly).astype(np.int32)], True, 1,
                      thickness=3)
        band = band.astype(bool)
        white = gt_half.min(axis=2) > 202
        assert (raw.min(axis=2) > 202)[band].mean() < 0.05
        assert white[band].mean() > 0.3, ann


@pytest.mark.slow
def test_sasa_segmentor_trains_tests_and_predicts(sasa_seg_run, mini,
                                                  tmp_path):
    cfg, ckpt, report = sasa_seg_run
    assert 0 <= report['summary']['mIoU'] <= 100
    out = str(tmp_path / 'infer')
    folder = osp.join(mini, 'ade', 'ADEChallengeData2016', 'images',
                      'validation')
    load_tool('infer.py').main([cfg, ckpt, folder, '--out-dir', out])
    for name in sorted(os.listdir(folder)):
        with open(osp.join(out, 'preds', name[:-4] + '.json')) as f:
            pred = json.load(f)
        # The Runner's checkpoint carries the mini set's classes.
        assert pred['classes'] == ['background', 'circle', 'square',
                                   'triangle']
        assert set(pred['pixel_share']) <= set(pred['classes'])
        assert osp.isfile(pred['label_map'])


def test_quickstart_rejects_an_unknown_mode():
    proc = run_tool(['tools/quickstart.sh', 'mask_rcnn'])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown quickstart mode 'mask_rcnn': give sasa, mask-rcnn "
        'or none (Twins); options after it go to tools/train.py']
