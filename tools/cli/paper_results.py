"""The papers' numbers for a config, read from the model-zoo metafiles.

``configs/{detection,segmentation}/metafile.yml`` hold one entry per
table-row config with the published results (typed from the Twins and
SASA papers; see those files and ``tools/analysis/zoo_table.py``). This
module maps their metric titles onto the short names of
:mod:`tools.cli.eval_report`, so that ``tools/analysis/report.py`` can
put a run next to the paper without a second copy of the numbers.
Values are percent, as printed.
"""
from __future__ import annotations

import glob
import os.path as osp
from typing import Dict, Optional

import yaml

# Metafile metric title -> eval_report short name.
METRIC_NAMES = {
    'box AP': 'bbox_mAP',
    'box AP50': 'bbox_mAP_50',
    'box AP75': 'bbox_mAP_75',
    'box APs': 'bbox_mAP_s',
    'box APm': 'bbox_mAP_m',
    'box APl': 'bbox_mAP_l',
    'mask AP': 'segm_mAP',
    'mask AP50': 'segm_mAP_50',
    'mask AP75': 'segm_mAP_75',
    'mIoU': 'mIoU',
    'mIoU(ms+flip)': 'mIoU_ms',
}

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_paper_results(
        config_root: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """``{config stem: {short metric name: value}}`` from every
    ``metafile.yml`` under ``config_root`` (default: the repo's configs).
    """
    root = config_root or osp.join(REPO_ROOT, 'configs')
    out: Dict[str, Dict[str, float]] = {}
    for path in sorted(glob.glob(osp.join(root, '**', 'metafile.yml'),
                                 recursive=True)):
        with open(path) as f:
            meta = yaml.safe_load(f) or {}
        for model in meta.get('Models') or []:
            row: Dict[str, float] = {}
            for result in model.get('Results') or []:
                for title, value in (result.get('Metrics') or {}).items():
                    if title in METRIC_NAMES and value is not None:
                        row[METRIC_NAMES[title]] = float(value)
            stem = osp.splitext(osp.basename(model.get('Config', '')))[0]
            if row and stem:
                out[stem] = row
    return out


def paper_result(config_name: str,
                 tta: bool = False,
                 table: Optional[Dict[str, Dict[str, float]]] = None
                 ) -> Optional[Dict[str, float]]:
    """The paper's numbers for a config stem, or ``None`` if it has none.

    With ``tta=True`` (a run tested with ``--tta``) the multi-scale + flip
    mIoU is returned as ``mIoU``, so that it lines up with the run's value;
    a run without TTA is compared with the single-scale mIoU.
    """
    table = load_paper_results() if table is None else table
    row = table.get(config_name)
    if row is None:
        return None
    row = dict(row)
    single = row.pop('mIoU', None)
    multi = row.pop('mIoU_ms', None)
    seg_value = multi if tta else single
    if seg_value is not None:
        row['mIoU'] = seg_value
    return row or None
