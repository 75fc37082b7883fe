"""Evaluation reports: ``metrics.json`` and ``report.md`` of a test run.

``tools/test.py`` calls :func:`write_eval_report` with the metric dict that
mmengine's ``Runner.test()`` returns. The raw metrics keep mmdet's and
mmseg's own names and units (COCO AP as a fraction, mmseg's IoU in percent);
the ``summary`` puts both on one scale, percent, under short names that
``tools/analysis/report.py`` and the model-zoo tables use:

* detection: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``,
  ``bbox_mAP_s/m/l`` (and ``segm_*`` for instance masks), plus
  ``bbox_AP.<class>`` when the metric ran ``classwise``;
* segmentation: ``aAcc``, ``mIoU``, ``mAcc``, plus ``IoU.<class>`` and
  ``Acc.<class>``.

``report.md`` shows the run's model-zoo columns (box AP, AP50, ... and, for
instance masks, mask AP, ...; or mIoU, mAcc, aAcc) and, in a second row,
the paper's numbers for the same config where the model-zoo metafiles have
them (:mod:`tools.cli.paper_results`).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import os.path as osp
import re
from typing import Any, Dict, List, Optional

from .paper_results import paper_result

SCHEMA = 'mmtwins.eval_report/1'

# Short name -> column title, in table order.
DET_COLUMNS = {
    'mAP': 'AP', 'mAP_50': 'AP50', 'mAP_75': 'AP75', 'mAP_s': 'APs',
    'mAP_m': 'APm', 'mAP_l': 'APl'
}
SEG_COLUMNS = {'mIoU': 'mIoU', 'mAcc': 'mAcc', 'aAcc': 'aAcc'}

_COCO_KEY = re.compile(r'^(bbox|segm)_(mAP(?:_50|_75|_s|_m|_l)?)$')
_COCO_CLASS_KEY = re.compile(r'^(bbox|segm)_(.+)_precision$')


def _number(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def summarize(metrics: Dict[str, Any], task: str) -> Dict[str, float]:
    """Short metric names in percent (COCO's -1, "no such objects", and
    non-numbers are left out)."""
    out: Dict[str, float] = {}
    for key, value in metrics.items():
        num = _number(value)
        if num is None or num < 0 or math.isnan(num):
            continue
        name = key.split('/', 1)[1] if '/' in key else key
        if task == 'detection':
            match = _COCO_KEY.match(name)
            if match:
                out[name] = round(100 * num, 2)
                continue
            match = _COCO_CLASS_KEY.match(name)
            if match:
                out[f'{match[1]}_AP.{match[2]}'] = round(100 * num, 2)
        elif name in SEG_COLUMNS or name.startswith(('IoU.', 'Acc.')):
            out[name] = round(num, 2)  # mmseg reports percent already
    return out


def headline_keys(summary: Dict[str, float], task: str) -> Dict[str, str]:
    """Column title -> summary key of the model-zoo columns: AP, AP50, ...
    for boxes (and ``mask AP``, ... when the run has instance masks), or
    mIoU, mAcc, aAcc."""
    keys: Dict[str, str] = {}
    if task == 'detection':
        for iou_type in ('bbox', 'segm'):
            if iou_type == 'segm' and not any(
                    k.startswith('segm_') for k in summary):
                continue
            prefix = '' if iou_type == 'bbox' else 'mask '
            for short, title in DET_COLUMNS.items():
                keys[prefix + title] = f'{iou_type}_{short}'
    else:
        for short, title in SEG_COLUMNS.items():
            keys[title] = short
    return keys


def headline(summary: Dict[str, float],
             task: str) -> Dict[str, Optional[float]]:
    """The model-zoo columns (``None`` where the run has no value), see
    :func:`headline_keys`."""
    return {title: summary.get(key)
            for title, key in headline_keys(summary, task).items()}


def _md_table(header: List[str], rows: List[List[Any]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(['---'] * len(header)) + '|']
    for row in rows:
        lines.append('| ' + ' | '.join(
            f'{v:.2f}' if isinstance(v, float) else
            '-' if v is None else str(v) for v in row) + ' |')
    return lines


def render_markdown(report: Dict[str, Any]) -> str:
    """The human-readable ``report.md`` for one ``metrics.json`` dict."""
    task, summary = report['task'], report['summary']
    ds = report.get('dataset') or {}
    lines = [
        f'# Evaluation report: {report["config_name"]}', '',
        f'- Task: {task}',
        f'- Config: `{report["config"]}`',
        f'- Checkpoint: `{report["checkpoint"]}`',
        f'- Dataset: {ds.get("type", "?")} at `{ds.get("data_root", "?")}`'
        f' ({ds.get("num_images", "?")} images)',
        f'- Test-time augmentation: {"yes" if report.get("tta") else "no"}',
        f'- Evaluated: {report["created"]}', '',
        'All values in percent.', ''
    ]
    if not report['metrics']:
        lines += ['**The evaluator returned no metrics** (for detection: no '
                  'box scored above the test score threshold).', '']
    keys = headline_keys(summary, task)
    rows = [['this run', *[summary.get(k) for k in keys.values()]]]
    paper = paper_result(report['config_name'], tta=bool(report.get('tta')))
    if paper and any(k in paper for k in keys.values()):
        # The published numbers of the same config (model-zoo metafile).
        rows.append(['paper', *[paper.get(k) for k in keys.values()]])
    lines += _md_table(['Source', *keys], rows)
    per_class: Dict[str, Dict[str, float]] = {}
    for key, value in summary.items():
        if '.' in key:
            metric, cls = key.split('.', 1)
            per_class.setdefault(cls, {})[metric] = value
    if per_class:
        metrics = sorted({m for d in per_class.values() for m in d})
        rows = [[cls, *[d.get(m, '-') for m in metrics]]
                for cls, d in per_class.items()]
        lines += ['', '## Per class', '']
        lines += _md_table(['Class', *metrics], rows)
    return '\n'.join(lines) + '\n'


def build_report(metrics: Dict[str, Any], task: str, config: str,
                 checkpoint: str,
                 dataset: Optional[Dict[str, Any]] = None,
                 tta: bool = False) -> Dict[str, Any]:
    """The ``metrics.json`` content (``tta``: tested with ``--tta``)."""
    from mmtwins import __version__
    return dict(
        schema=SCHEMA,
        config=config,
        config_name=osp.splitext(osp.basename(config))[0],
        task=task,
        checkpoint=checkpoint,
        dataset=dataset or {},
        tta=tta,
        created=datetime.datetime.now().isoformat(timespec='seconds'),
        mmtwins_version=__version__,
        metrics={k: _jsonable(v) for k, v in metrics.items()},
        summary=summarize(metrics, task))


def _jsonable(value: Any) -> Any:
    num = _number(value)
    if num is not None and not isinstance(value, str):
        return num
    return value if isinstance(value, (str, bool, type(None))) else str(value)


def write_eval_report(work_dir: str, report: Dict[str, Any]) -> List[str]:
    """Write ``metrics.json`` and ``report.md`` into ``work_dir``."""
    os.makedirs(work_dir, exist_ok=True)
    json_path = osp.join(work_dir, 'metrics.json')
    md_path = osp.join(work_dir, 'report.md')
    with open(json_path, 'w') as f:
        json.dump(report, f, indent=2)
        f.write('\n')
    with open(md_path, 'w') as f:
        f.write(render_markdown(report))
    return [json_path, md_path]


def load_report(path: str) -> Dict[str, Any]:
    """Read a ``metrics.json`` (or the folder holding one)."""
    if osp.isdir(path):
        path = osp.join(path, 'metrics.json')
    with open(path) as f:
        report = json.load(f)
    if report.get('schema') != SCHEMA:
        raise ValueError(f'{path} is not an mmtwins evaluation report')
    return report
