"""``mmtwins.ClasswiseIoUMetric``: mmseg's IoUMetric plus per-class values.

mmseg 1.2.2's ``IoUMetric`` computes IoU and accuracy for every class but
only prints them as a table in the log; ``Runner.test()`` returns just
``aAcc``, ``mIoU`` and ``mAcc``. This subclass also returns the per-class
values (``IoU.<class>``, ``Acc.<class>``, in percent like mmseg), so that
``tools/test.py`` can write them to ``metrics.json``. Everything else,
including the log table, is mmseg's own.

The class lives in an ``mmtwins``-scope metric registry (a child of
mmengine's root ``METRICS``), so an mmseg config can name it as
``type='mmtwins.ClasswiseIoUMetric'`` once this module is imported (e.g.
``custom_imports=dict(imports=['mmtwins.utils.seg_metrics'])``);
``tools/test.py`` does that itself.
"""
from __future__ import annotations

import math
from typing import Dict

from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import Registry
from mmseg.evaluation.metrics import IoUMetric

METRICS = Registry(
    'metric',
    parent=MMENGINE_METRICS,
    scope='mmtwins',
    locations=['mmtwins.utils.seg_metrics'])


@METRICS.register_module()
class ClasswiseIoUMetric(IoUMetric):
    """mmseg ``IoUMetric`` that also returns one value per class and metric.

    Takes exactly the arguments of mmseg's ``IoUMetric``.

    Examples:
        >>> metric = ClasswiseIoUMetric(iou_metrics=['mIoU'])
        >>> # after evaluation: {'aAcc': .., 'mIoU': .., 'mAcc': ..,
        >>> #                    'IoU.road': .., 'Acc.road': .., ...}
    """

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """mmseg's summary metrics plus ``<Metric>.<class>`` entries."""
        metrics = super().compute_metrics(results)
        if self.format_only or not results:
            return metrics
        inter, union, pred, label = (sum(col) for col in zip(*results))
        per_class = self.total_area_to_metrics(inter, union, pred, label,
                                               self.metrics, self.nan_to_num,
                                               self.beta)
        per_class.pop('aAcc', None)
        names = self.dataset_meta['classes']
        for metric, values in per_class.items():
            for name, value in zip(names, values):
                value = float(value)
                if not math.isnan(value):  # class absent from the set
                    metrics[f'{metric}.{name}'] = round(value * 100, 2)
        return metrics
