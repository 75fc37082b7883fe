"""``mmtwins.NumClassCheckHook``: mmdet's head/dataset class-count check,
for detectors and segmentors, as a clear error.

mmdet's ``NumClassCheckHook`` compares the ``num_classes`` of every head
with the classes in the dataset's metainfo before each training and
validation epoch, with an ``assert``. Without it a detector whose
``num_classes`` (2) is smaller than the dataset's class count (3) trains
with the third class silently as background, and a segmentor fails deep in
its loss (``IndexError: Target 3 is out of bounds``). This subclass runs
mmdet's check unchanged (it applies to mmseg's heads as well: they carry
``num_classes`` too) and raises
:class:`~mmtwins.errors.ConfigDataMismatchError` instead of an
``AssertionError``, naming the dataset's classes and what to change.
"""
from __future__ import annotations

from mmdet.engine.hooks import NumClassCheckHook as MMDetNumClassCheckHook

from mmtwins.errors import ConfigDataMismatchError
from mmtwins.registry import HOOKS


@HOOKS.register_module()
class NumClassCheckHook(MMDetNumClassCheckHook):
    """mmdet's ``NumClassCheckHook`` raising a one-line error."""

    def _check_head(self, runner, mode: str) -> None:
        try:
            super()._check_head(runner, mode)
        except AssertionError as exc:
            loader = runner.train_dataloader if mode == 'train' else \
                runner.val_dataloader
            classes = tuple(loader.dataset.metainfo.get('classes') or ())
            model = runner.model
            model = getattr(model, 'module', model)
            heads = [f'model.{name}.num_classes is {module.num_classes}'
                     for name, module in model.named_modules()
                     if name and getattr(module, 'num_classes', None)
                     not in (None, len(classes))
                     and not name.endswith('rpn_head')]
            found = '; '.join(heads[:3]) or str(exc)
            raise ConfigDataMismatchError(
                f'{found}, but the {mode} dataset has {len(classes)} '
                f'classes {classes[:8]}; set num_classes={len(classes)} in '
                "the model's heads, or metainfo=dict(classes=...) in the "
                'dataset to the classes the model should learn') from exc
