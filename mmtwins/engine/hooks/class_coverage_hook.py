"""``mmtwins.ClassCoverageHook``: warn when the data's classes only partly
match the config's.

mmdet's ``CocoDataset`` keeps the annotations whose category name is one of
the configured classes and drops the others without a word; a configured
class that the annotation file does not have is simply never positive. A
config with classes (circle, square, triangle) on data with (circle,
square, dog) trains to the end, having learned nothing about triangles and
thrown the dogs away. Before training this hook compares, for every
COCO-style training dataset (one with an ``ann_file`` and ``cat_ids``):

* the configured classes with no annotation in the loaded data, and
* the categories of the annotation file that are no configured class
  (their boxes are ignored),

and logs one warning naming both. (No overlap at all is an error already:
the dataset is then empty.) It costs one scan of the annotation file for
its ``"categories"`` list and one pass over the loaded samples.
"""
from __future__ import annotations

import json
import mmap
from collections import Counter
from typing import Any, Iterator, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mmtwins.registry import HOOKS


def coco_category_names(path: str) -> List[str]:
    """The category names of a COCO annotation file.

    The ``"categories"`` list is decoded on its own where it can be found
    (COCO files write it last), else the whole file is parsed.
    """
    with open(path, 'rb') as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return []
        with data:
            at = data.rfind(b'"categories"')
            if at >= 0:
                colon = data.find(b':', at)
                tail = data[colon + 1:].decode('utf-8', errors='replace')
                try:
                    cats, _ = json.JSONDecoder().raw_decode(tail.lstrip())
                except ValueError:
                    cats = None
                if isinstance(cats, list):
                    return [c['name'] for c in cats
                            if isinstance(c, dict) and 'name' in c]
    with open(path) as f:
        return [c['name'] for c in json.load(f).get('categories', [])]


def _datasets(dataset: Any) -> Iterator[Any]:
    """The datasets inside Repeat/ClassBalanced/Concat wrappers."""
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        for sub in inner:
            yield from _datasets(sub)
    elif hasattr(dataset, 'dataset'):
        yield from _datasets(dataset.dataset)
    else:
        yield dataset


def coverage_warning(dataset: Any) -> Optional[str]:
    """The warning for one COCO-style dataset, or None if its classes and
    its annotation file's categories match (or it is not COCO-style)."""
    ann_file = getattr(dataset, 'ann_file', '')
    classes = list((getattr(dataset, 'metainfo', None) or {}).get(
        'classes') or ())
    if not hasattr(dataset, 'cat_ids') or not classes or \
            not str(ann_file).endswith('.json'):
        return None
    counts: Counter = Counter()
    for i in range(len(dataset)):  # data_list may be serialized away
        for inst in dataset.get_data_info(i).get('instances', ()):
            if not inst.get('ignore_flag', 0):
                counts[inst.get('bbox_label')] += 1
    unused = [name for i, name in enumerate(classes) if not counts[i]]
    ignored = sorted(set(coco_category_names(ann_file)) - set(classes))
    if not unused and not ignored:
        return None
    parts = []
    if unused:
        parts.append(f'config classes with no annotation (never learned): '
                     f'{", ".join(unused)}')
    if ignored:
        parts.append(f'categories of the data that are no config class '
                     f'(their boxes are ignored): {", ".join(ignored)}')
    return (f'the classes of {ann_file} only partly match the config: '
            f'{"; ".join(parts)}; set metainfo=dict(classes=(...)) in the '
            "dataset config and num_classes in the model's heads to the "
            'classes to learn')


@HOOKS.register_module()
class ClassCoverageHook(Hook):
    """Warn once, before training, about partly matching classes."""

    priority = 'LOW'

    def before_train(self, runner) -> None:
        if not is_main_process():
            return
        for dataset in _datasets(runner.train_dataloader.dataset):
            msg = coverage_warning(dataset)
            if msg:
                runner.logger.warning(msg)
