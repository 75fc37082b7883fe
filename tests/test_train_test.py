"""End to end through the real tools on CPU: train a few iterations, test,
and gather the reports, for a detection and a segmentation quickstart
config."""
import json
import os
import os.path as osp
import platform
import re

import pytest
import torch
from tools_helpers import make_mini, run_tool, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 4, 2)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _train_and_test(tmp, task, mini, test_args):
    cfg = write_config(osp.join(tmp, f'{task}.py'), task, mini)
    work = osp.join(tmp, 'work')
    proc = _ok(run_tool(['tools/train.py', cfg, '--work-dir', work]))
    log = proc.stdout + proc.stderr
    assert 'eta:' in log  # mmengine's progress logging
    if not torch.cuda.is_available() and platform.libc_ver()[0] == 'glibc':
        # --malloc reuse (the default) on the CPU: said in one line
        assert 'CPU memory: glibc keeps freed memory for reuse' in log
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    assert osp.isfile(ckpt)
    test_dir = osp.join(work, 'test')
    _ok(run_tool(['tools/test.py', cfg, ckpt, '--work-dir', test_dir,
                  *test_args]))
    with open(osp.join(test_dir, 'metrics.json')) as f:
        report = json.load(f)
    with open(osp.join(test_dir, 'report.md')) as f:
        markdown = f.read()
    assert report['task'] == task and report['checkpoint'] == ckpt
    assert report['dataset']['num_images'] == 2
    return work, test_dir, report, markdown


def _run(tmp_path_factory, mini, task: str, out_name: str):
    """Train and test ``task``, saving pictures and predictions too."""
    tmp = str(tmp_path_factory.mktemp(task))
    vis, out = osp.join(tmp, 'vis'), osp.join(tmp, out_name)
    return (*_train_and_test(tmp, task, mini,
                             ['--show-dir', vis, '--out', out]), vis, out)


@pytest.fixture(scope='module')
def det_run(tmp_path_factory, mini):
    return _run(tmp_path_factory, mini, 'detection', 'preds.pkl')


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory, mini):
    return _run(tmp_path_factory, mini, 'segmentation', 'pred_png')


def _files(folder):
    return [f for _, _, files in os.walk(folder) for f in files]


def test_detection_report(det_run):
    work, test_dir, report, markdown, vis, out = det_run
    summary = report['summary']
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert 0 <= summary[key] <= 100, key
    # COCO's -1 (no objects of that size) is left out, the rest is in range.
    for key in ('bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l'):
        assert 0 <= summary.get(key, 0) <= 100, key
    assert 'coco/bbox_mAP' in report['metrics']
    assert '| AP | AP50 | AP75 | APs | APm | APl |' in markdown
    assert sum(f.endswith(('.jpg', '.png')) for f in _files(vis)) == 2
    assert osp.getsize(out) > 0


def test_segmentation_report(seg_run):
    work, test_dir, report, markdown, vis, out = seg_run
    summary = report['summary']
    for key in ('aAcc', 'mIoU', 'mAcc', 'IoU.background'):
        assert 0 <= summary[key] <= 100, key
    assert '## Per class' in markdown and '| background |' in markdown
    assert sorted(f for f in os.listdir(out)) == \
        ['ADE_val_00000001.png', 'ADE_val_00000002.png']
    assert sum(f.endswith('.png') for f in _files(vis)) == 2


def test_gathered_report_and_curves(det_run, seg_run, tmp_path):
    out_md = str(tmp_path / 'report.md')
    out_json = str(tmp_path / 'report.json')
    _ok(run_tool(['tools/analysis/report.py', det_run[1], seg_run[1],
                  '--out', out_md, '--json', out_json]))
    with open(out_json) as f:
        gathered = json.load(f)
    assert 0 <= gathered['detection']['bbox_mAP'] <= 1
    assert 0 <= gathered['segmentation']['mIoU'] <= 1
    assert gathered['segmentation']['mIoU'] == pytest.approx(
        seg_run[2]['summary']['mIoU'] / 100, abs=1e-4)
    with open(out_md) as f:
        text = f.read()
    assert '## Detection' in text and '## Segmentation' in text
    # Config links resolve from where the report was written.
    links = re.findall(r'\]\(([^)]+\.py)\)', text)
    assert len(links) == 2
    for link in links:
        assert osp.isfile(osp.join(osp.dirname(out_md), link)), link

    png = str(tmp_path / 'curves.png')
    proc = _ok(run_tool(['tools/analysis/analyze_logs.py', 'plot_curve',
                         det_run[0], '--out', png]))
    assert 'coco/bbox_mAP' in proc.stdout and osp.getsize(png) > 0
    proc = _ok(run_tool(['tools/analysis/analyze_logs.py', 'cal_train_time',
                         seg_run[0]]))
    assert 'average iter time' in proc.stdout


def test_inference_benchmark_tool(det_run, seg_run, tmp_path):
    """tools/analysis/benchmark.py on the trained checkpoints (test set) and
    on random images (no checkpoint)."""
    det_cfg = osp.join(osp.dirname(det_run[0]), 'detection.py')
    ckpt = open(osp.join(det_run[0], 'last_checkpoint')).read().strip()
    proc = _ok(run_tool(['tools/analysis/benchmark.py', det_cfg, ckpt,
                         '--num-images', '2', '--warmup', '1']))
    assert re.search(r'Overall fps: [\d.]+ img / s on cpu \(the test set, '
                     r'2 images after 1 warm-up', proc.stdout)
    seg_cfg = osp.join(osp.dirname(seg_run[0]), 'segmentation.py')
    proc = _ok(run_tool(['tools/analysis/benchmark.py', seg_cfg, '--shape',
                         '64', '96', '--num-images', '2', '--warmup', '0']))
    assert 'random 64x96 images, 2 images' in proc.stdout
