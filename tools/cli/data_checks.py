"""Diagnoses of dataset errors that surface deep inside mmdet/mmseg.

Each function takes an exception (one link of the chain the tool caught)
and the :class:`~tools.cli.errors.ErrorContext` and returns a one-line
message, or ``None`` when the exception is not the problem it knows. They
only run after something failed, so they may read annotation files that
the tool would not want to parse up front.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator, List, Optional, Tuple

from .config_checks import dataset_paths
from .errors import DATA_DOC, ErrorContext

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _annotation_files(cfg: Any) -> Iterator[Tuple[str, str]]:
    seen = set()
    for kind, path, where in dataset_paths(cfg, LOADERS):
        if kind == 'annotation file' and path.endswith('.json') \
                and path not in seen:
            seen.add(path)
            yield path, where


def invalid_json(exc: BaseException, ctx: ErrorContext) -> Optional[str]:
    """An annotation file that is not valid JSON (e.g. truncated)."""
    if not isinstance(exc, json.JSONDecodeError) or ctx.cfg is None:
        return None
    for path, where in _annotation_files(ctx.cfg):
        try:
            with open(path) as f:
                json.load(f)
        except json.JSONDecodeError as err:
            return (f'annotation file {path} (set by {where}) is not valid '
                    f'JSON: {err.msg} at line {err.lineno} column '
                    f'{err.colno}; it may be truncated: prepare it again as '
                    f'described in {DATA_DOC}')
    return None


def _configured_classes(cfg: Any, where: str) -> Optional[List[str]]:
    """The classes a dataset config asks for: its metainfo, else the
    dataset class's own METAINFO."""
    node = cfg
    for part in where.split('.'):
        node = node[int(part)] if part.isdigit() else node[part]
    classes = (node.get('metainfo') or {}).get('classes')
    if classes is None:
        from mmengine.registry import DATASETS
        with DATASETS.switch_scope_and_registry(
                cfg.get('default_scope')) as registry:
            cls = registry.get(node.get('type'))
        classes = getattr(cls, 'METAINFO', {}).get('classes')
    return list(classes) if classes is not None else None


def no_sample_of_the_classes(exc: BaseException,
                             ctx: ErrorContext) -> Optional[str]:
    """A COCO-style dataset left empty because none of its annotation
    categories is a configured class (mmengine then fails with "need at
    least one array to concatenate")."""
    if not isinstance(exc, ValueError) or ctx.cfg is None or \
            'need at least one array to concatenate' not in str(exc):
        return None
    for path, where in _annotation_files(ctx.cfg):
        with open(path) as f:
            cats = [c['name'] for c in json.load(f).get('categories', [])]
        dataset_where = where.rsplit('.', 1)[0]
        wanted = _configured_classes(ctx.cfg, dataset_where)
        if wanted is not None and not set(wanted) & set(cats):
            shown = ', '.join(wanted[:4]) + (', ...' if len(wanted) > 4
                                              else '')
            return (f'{dataset_where} has no sample: none of the '
                    f'{len(wanted)} classes of the config ({shown}) is a '
                    f'category of {path} ({", ".join(cats[:8])}); set '
                    'metainfo=dict(classes=(...)) in the dataset config and '
                    "num_classes in the model's heads to the data's classes")
    return ('a dataset has no sample (mmengine: need at least one array to '
            'concatenate): check that its metainfo classes occur in its '
            'annotations')


# mmcv's LoadImageFromFile on bytes that do not decode, and a missing file
# as a data-loader worker re-raises it (the path inside its traceback text).
_UNDECODABLE = re.compile(r'failed to load image: (\S+)')
_NO_SUCH_FILE = re.compile(r"No such file or directory: '([^']+)'")


def unreadable_image(exc: BaseException,
                     ctx: ErrorContext) -> Optional[str]:
    """An image file that does not decode, or that the annotations name
    but does not exist (also when a data-loader worker hit it)."""
    text = str(exc)
    # the last match: a worker's traceback text also shows the source line
    found = [m for m in _UNDECODABLE.findall(text) if '{' not in m]
    if found:
        return (f'cannot decode image {found[-1]}: the file is '
                'damaged or not an image; replace it, or delete it and its '
                f'annotation (see {DATA_DOC})')
    if isinstance(exc, OSError) and 'DataLoader worker' in text:
        found = _NO_SUCH_FILE.findall(text)
        if found:
            return (f'file not found: {found[-1]} (named by the '
                    'dataset\'s annotations); restore it, or remove its '
                    f'annotation (see {DATA_DOC})')
    return None


DATA_DIAGNOSES = [invalid_json, no_sample_of_the_classes, unreadable_image]
