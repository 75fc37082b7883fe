"""Evaluation reports: metric names and units, report.md, and the gathered
table beside the paper numbers (tools/analysis/report.py)."""
import json

import pytest
from tools_helpers import load_tool

from tools.cli.eval_report import (
    build_report,
    load_report,
    render_markdown,
    summarize,
    write_eval_report,
)
from tools.cli.paper_results import load_paper_results, paper_result

report_tool = load_tool('analysis/report.py')

DET_METRICS = {
    'coco/bbox_mAP': 0.431, 'coco/bbox_mAP_50': 0.642,
    'coco/bbox_mAP_75': 0.46, 'coco/bbox_mAP_s': 0.27,
    'coco/bbox_mAP_m': -1.0, 'coco/bbox_mAP_l': 0.573
}
SEG_METRICS = {
    'aAcc': 80.5, 'mIoU': 44.1, 'mAcc': 55.0, 'IoU.wall': 70.25,
    'Acc.wall': 80.0, 'IoU.sky': float('nan')
}


def test_summary_units_and_names():
    det = summarize(DET_METRICS, 'detection')
    assert det == {'bbox_mAP': 43.1, 'bbox_mAP_50': 64.2,
                   'bbox_mAP_75': 46.0, 'bbox_mAP_s': 27.0,
                   'bbox_mAP_l': 57.3}  # COCO's -1 ("none") dropped
    seg = summarize(SEG_METRICS, 'segmentation')
    assert seg == {'aAcc': 80.5, 'mIoU': 44.1, 'mAcc': 55.0,
                   'IoU.wall': 70.25, 'Acc.wall': 80.0}  # NaN dropped


def _write(tmp_path, name, metrics, task, config):
    report = build_report(metrics, task, config, 'ckpt.pth',
                          dict(type='X', data_root='data/x', num_images=5))
    write_eval_report(str(tmp_path / name), report)
    return str(tmp_path / name)


def test_metrics_json_and_markdown(tmp_path):
    work = _write(tmp_path, 'seg', SEG_METRICS, 'segmentation',
                  'configs/segmentation/fpn_twins_pcpvt_s_80k_ade20k_'
                  '512x512.py')
    with open(f'{work}/metrics.json') as f:
        raw = json.load(f)  # strict JSON: no NaN
    assert raw['metrics']['mIoU'] == 44.1
    report = load_report(work)
    assert report['config_name'] == 'fpn_twins_pcpvt_s_80k_ade20k_512x512'
    text = render_markdown(report)
    assert '| mIoU | mAcc | aAcc |' in text and '| 44.10 | 55.00 | 80.50 |' \
        in text
    assert '| wall | 80.00 | 70.25 |' in text  # per class: Acc, IoU
    with pytest.raises(ValueError):
        (tmp_path / 'bad.json').write_text('{}')
        load_report(str(tmp_path / 'bad.json'))


def test_gathered_table_beside_the_paper(tmp_path, capsys):
    det = _write(tmp_path, 'det', DET_METRICS, 'detection',
                 'configs/detection/retinanet_twins_pcpvt_s_1x_coco.py')
    seg = _write(tmp_path, 'seg', SEG_METRICS, 'segmentation',
                 'configs/segmentation/fpn_twins_pcpvt_s_80k_ade20k_'
                 '512x512.py')
    mini = _write(tmp_path, 'mini', SEG_METRICS, 'segmentation',
                  'configs/quickstart/fpn_twins_pcpvt_s_mini_ade.py')
    out_json = str(tmp_path / 'r.json')
    report_tool.main([det, seg, mini, '--out', str(tmp_path / 'r.md'),
                      '--json', out_json])
    text = capsys.readouterr().out
    # Paper: RetinaNet PCPVT-S 43.0 AP, Semantic FPN PCPVT-S 44.3 mIoU.
    det_row = next(line for line in text.splitlines()
                   if 'retinanet_twins_pcpvt_s_1x_coco' in line)
    assert det_row.endswith('| 43.1 | 64.2 | 46.0 | 27.0 | - | 57.3 | 43.0 '
                            '| +0.1 |')
    seg_row = next(line for line in text.splitlines()
                   if 'fpn_twins_pcpvt_s_80k' in line)
    assert seg_row.endswith('| 44.1 | 55.0 | 80.5 | 44.3 | -0.2 |')
    mini_row = next(line for line in text.splitlines() if 'mini_ade' in line)
    assert mini_row.endswith('| - | - |')  # no paper number
    with open(out_json) as f:
        gathered = json.load(f)
    assert gathered['detection']['bbox_mAP'] == pytest.approx(0.431)
    assert gathered['segmentation']['mIoU'] == pytest.approx(0.441)
    assert len(gathered['runs']) == 3


def test_report_tool_rejects_non_reports(tmp_path):
    with pytest.raises(SystemExit, match='cannot read a report'):
        report_tool.main([str(tmp_path)])


METAFILE = """
Models:
- Name: upernet_x
  Config: configs/segmentation/upernet_x.py
  Results:
  - Task: Semantic Segmentation
    Dataset: ADE20K
    Metrics:
      mIoU: 46.2
      mIoU(ms+flip): 47.5
- Name: only_ms
  Config: configs/segmentation/only_ms.py
  Results:
  - Task: Semantic Segmentation
    Metrics:
      mIoU(ms+flip): 44.9
- Name: mask_x
  Config: configs/detection/mask_x.py
  Results:
  - Task: Object Detection
    Metrics: {box AP: 42.9, box AP50: 65.8, FPS: 3.0}
  - Task: Instance Segmentation
    Metrics: {mask AP: 40.0}
- Name: no_results
  Config: configs/detection/no_results.py
"""


def test_paper_numbers_from_metafiles(tmp_path):
    (tmp_path / 'seg').mkdir()
    (tmp_path / 'seg' / 'metafile.yml').write_text(METAFILE)
    table = load_paper_results(str(tmp_path))
    assert table == {
        'upernet_x': {'mIoU': 46.2, 'mIoU_ms': 47.5},
        'only_ms': {'mIoU_ms': 44.9},
        'mask_x': {'bbox_mAP': 42.9, 'bbox_mAP_50': 65.8, 'segm_mAP': 40.0},
    }
    assert paper_result('upernet_x', table=table) == {'mIoU': 46.2}
    assert paper_result('upernet_x', tta=True, table=table) == {
        'mIoU': 47.5}
    assert paper_result('only_ms', table=table) is None
    assert paper_result('nothing', table=table) is None


def test_repo_metafiles_hold_the_paper_rows():
    table = load_paper_results()
    assert table['retinanet_twins_pcpvt_s_1x_coco']['bbox_mAP'] == 43.0
    assert table['fpn_twins_pcpvt_s_80k_ade20k_512x512']['mIoU'] == 44.3


MASK_METRICS = {
    'coco/bbox_mAP': 0.43, 'coco/bbox_mAP_50': 0.65,
    'coco/segm_mAP': 0.395, 'coco/segm_mAP_50': 0.62,
}


def test_mask_ap_beside_box_ap_and_the_paper(tmp_path, capsys):
    """Mask R-CNN rows: mask AP next to box AP, each beside the paper's
    (Twins Table 4, PCPVT-S 1x: box 42.9, mask 40.0)."""
    mask = _write(tmp_path, 'mask', MASK_METRICS, 'detection',
                  'configs/detection/mask_rcnn_twins_pcpvt_s_1x_coco.py')
    quick = _write(tmp_path, 'quick', MASK_METRICS, 'detection',
                   'configs/quickstart/mask_rcnn_twins_pcpvt_s_mini_coco.py')
    out_json = str(tmp_path / 'r.json')
    report_tool.main([mask, quick, '--json', out_json])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith('| Config'))
    assert header.endswith('| mask AP | Paper box AP | Diff box AP | '
                           'Paper mask AP | Diff mask AP |')
    row = next(line for line in lines if 'mask_rcnn_twins_pcpvt_s_1x' in line)
    assert row.endswith('| 43.0 | 65.0 | - | - | - | - | 39.5 | 42.9 | +0.1 '
                        '| 40.0 | -0.5 |')
    quick_row = next(line for line in lines if 'mini_coco' in line)
    assert quick_row.endswith('| 39.5 | - | - | - | - |')
    with open(out_json) as f:
        gathered = json.load(f)
    assert gathered['detection']['segm_mAP'] == pytest.approx(0.395)
    assert gathered['runs'][0]['paper']['segm_mAP'] == pytest.approx(0.4)

    text = render_markdown(load_report(mask))
    assert '| Source | AP | AP50 |' in text and '| mask AP |' in text
    this_run = next(line for line in text.splitlines()
                    if line.startswith('| this run |'))
    assert '| 43.00 | 65.00 |' in this_run and '| 39.50 | 62.00 |' in this_run
    paper = next(line for line in text.splitlines()
                 if line.startswith('| paper |'))
    assert paper.startswith('| paper | 42.90 | 65.80 | 47.10 | - |')
    assert '| 40.00 | 62.70 | 42.90 |' in paper
    # No paper row for a config the papers do not have.
    assert '| paper |' not in render_markdown(load_report(quick))
