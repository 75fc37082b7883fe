"""Load and check a config before a tool hands it to mmengine's Runner.

Everything here raises :class:`~mmtwins.utils.tool_errors.ToolError` with a
one-line message naming the problem:

* a config or checkpoint file that does not exist;
* a ``--cfg-options`` key that the config does not have (mmengine would
  otherwise add it silently and the option would do nothing);
* a dataset folder or annotation file that is missing (the message points
  to the README's data section);
* a config whose ``default_scope`` is neither ``mmdet`` nor ``mmseg``.
"""
from __future__ import annotations

import inspect
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from .tool_errors import DATA_DOC, ToolError

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}

# Top-level keys that mmengine's Runner or the tools read although a config
# need not define them; ``--cfg-options`` may add these.
_EXTRA_TOP_KEYS = {
    'default_scope', 'custom_imports', 'auto_scale_lr', 'tta_model',
    'tta_pipeline', 'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn',
    'runner_type', 'log_level', 'log_processor', 'randomness', 'resume',
    'load_from', 'launcher', 'env_cfg', 'visualizer', 'work_dir',
    'default_hooks', 'custom_hooks', 'experiment_name', 'compile'
}


def load_config(path: str,
                cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read ``path`` and merge checked ``--cfg-options`` into it."""
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    return cfg


def task_of(cfg: Config) -> str:
    """``'detection'`` or ``'segmentation'``, from the ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ToolError(
            f'config default_scope is {scope!r}; the mmtwins tools need '
            "'mmdet' (detection) or 'mmseg' (segmentation)")
    return TASKS[scope]


def check_file(path: str, what: str) -> None:
    """Fail unless ``path`` is an existing file (URLs are not checked)."""
    if '://' in path:
        return
    if not osp.isfile(path):
        raise ToolError(f'{what} not found: {path}')


def _runner_keys() -> set:
    from mmengine.runner import Runner
    params = inspect.signature(Runner.__init__).parameters
    return set(params) - {'self'} | _EXTRA_TOP_KEYS


def _registered_class(type_: Any, scope: Optional[str]) -> Optional[type]:
    """Find the class a ``type`` value names in any mmengine registry."""
    if isinstance(type_, type):
        return type_
    if not isinstance(type_, str):
        return None
    import mmengine.registry as reg
    registries = [
        obj for obj in vars(reg).values() if isinstance(obj, reg.Registry)
    ]
    names = [type_]
    if scope and '.' not in type_:
        names.insert(0, f'{scope}.{type_}')
    for registry in registries:
        for name in names:
            try:
                found = registry.get(name)
            except Exception:  # a registry whose lazy import fails
                found = None
            if found is not None:
                return found
    return None


def _accepts_keyword(node: dict, key: str, scope: Optional[str]) -> bool:
    """Whether the class named by ``node['type']`` takes ``key``.

    A class whose ``__init__`` has ``**kwargs`` usually hands them to its
    parent, so the search goes up the MRO until an ``__init__`` without
    ``**kwargs`` (or ``nn.Module``, which rejects unknown keywords).
    """
    import torch.nn as nn
    cls = _registered_class(node.get('type'), scope)
    if cls is None:
        return False
    for klass in cls.__mro__:
        if klass in (object, nn.Module) or '__init__' not in vars(klass):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            return False
        if key in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


def check_cfg_options(cfg: Config, options: Dict[str, Any]) -> None:
    """Reject ``--cfg-options`` keys that name nothing in ``cfg``.

    Every part of a dotted key must exist, except the last one when it is a
    Runner key at the top level, or an argument of the class that the
    enclosing dict's ``type`` names (e.g. ``model.backbone.frozen_stages``).
    List items are addressed by index (``...pipeline.1.scale``).
    """
    scope = cfg.get('default_scope')
    for key in options:
        node: Any = cfg._cfg_dict
        parts = key.split('.')
        for i, part in enumerate(parts):
            where = '.'.join(parts[:i]) or 'the config'
            last = i == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ToolError(
                        f'unknown --cfg-options key {key!r}: {where} is a '
                        f'list of {len(node)} items, {part!r} is no index')
                node = node[int(part)]
            elif isinstance(node, dict):
                if part in node:
                    node = node[part]
                    continue
                if last and i == 0 and part in _runner_keys():
                    break
                if last and i > 0 and _accepts_keyword(node, part, scope):
                    break
                known = ', '.join(sorted(map(str, node))[:12])
                raise ToolError(
                    f'unknown --cfg-options key {key!r}: {where} has no '
                    f'{part!r} (it has: {known})')
            else:
                raise ToolError(
                    f'unknown --cfg-options key {key!r}: {where} is '
                    f'{node!r}, not a dict')


def _datasets(cfg: Any, where: str) -> Iterator[Tuple[dict, str]]:
    """Yield every dataset dict inside wrappers (Repeat/Concat/...)."""
    if not isinstance(cfg, dict):
        return
    yield cfg, where
    if isinstance(cfg.get('dataset'), dict):
        yield from _datasets(cfg['dataset'], f'{where}.dataset')
    for i, sub in enumerate(cfg.get('datasets') or []):
        yield from _datasets(sub, f'{where}.datasets.{i}')


def _missing(kind: str, path: str, where: str) -> ToolError:
    return ToolError(
        f'dataset {kind} not found: {path} (set by {where}); prepare the '
        f'data as described in {DATA_DOC}')


def _join(root: str, path: str) -> str:
    return path if osp.isabs(path) or not root else osp.join(root, path)


def dataset_paths(cfg: Config,
                  loaders: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``(kind, path, config key)`` for every dataset folder and file that
    the given dataloaders read, resolved as mmengine's BaseDataset does."""
    out = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for ds, where in _datasets(loader_cfg.get('dataset'),
                                   f'{loader}.dataset'):
            root = ds.get('data_root') or ''
            if root:
                out.append(('folder', root, f'{where}.data_root'))
            ann = ds.get('ann_file') or ''
            if isinstance(ann, str) and ann:
                out.append(('annotation file', _join(root, ann),
                            f'{where}.ann_file'))
            prefix = ds.get('data_prefix') or {}
            if isinstance(prefix, dict):
                for name, sub in prefix.items():
                    if isinstance(sub, str) and sub:
                        out.append(('folder', _join(root, sub),
                                    f'{where}.data_prefix.{name}'))
    return out


def check_dataset_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Fail on the first missing dataset folder or annotation file."""
    for kind, path, where in dataset_paths(cfg, loaders):
        if '://' in path:
            continue
        exists = osp.isfile(path) if kind == 'annotation file' else \
            osp.isdir(path)
        if not exists:
            raise _missing(kind, path, where)


def resolve_work_dir(cfg: Config, cli_work_dir: Optional[str],
                     config_path: str) -> str:
    """CLI ``--work-dir``, else the config's, else ``./work_dirs/<stem>``."""
    if cli_work_dir:
        return cli_work_dir
    if cfg.get('work_dir'):
        return cfg.work_dir
    stem = osp.splitext(osp.basename(config_path))[0]
    return osp.join('./work_dirs', stem)
