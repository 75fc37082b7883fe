"""Shared helpers for the config, model-zoo and parameter-count tests.

Building the ~60 table-row models dominates these tests, so each model is
built once (by ``test_configs.py``) and only its parameter count is kept in
:data:`PARAMS` for ``test_param_counts.py``; run alone, that file builds the
models it needs itself.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import os
from typing import Any, ContextManager, Dict, List

import mmengine.config.config
import mmengine.config.utils
import torch
from mmengine.config import Config
from mmengine.fileio import load as load_file
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIRS = ('detection', 'segmentation')

# Parameter count of each table-row model, by config stem.
PARAMS: Dict[str, int] = {}


@functools.lru_cache(maxsize=None)
def _package_config_index(package_path: str) -> Dict[str, dict]:
    """All metafile entries of an installed OpenMMLab package, by config."""
    mim = os.path.join(package_path, '.mim')
    index: Dict[str, dict] = {}
    for meta_path in load_file(os.path.join(mim, 'model-index.yml'))['Import']:
        for entry in load_file(os.path.join(mim, meta_path))['Models']:
            if 'Config' in entry:
                index.setdefault(entry['Config'].partition('/')[-1], entry)
    return index


def _cached_cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    """Same result as mmengine's ``_get_cfg_metainfo``, parsed once.

    mmengine re-reads every metafile of mmdet (~400 YAML files, about a
    second) each time a config names an ``mmdet::`` or ``mmseg::`` base;
    with ~80 configs that alone would take minutes.
    """
    index = _package_config_index(package_path)
    if cfg_path not in index:
        raise ValueError(f'{cfg_path} is not in the metafiles of '
                         f'{package_path}')
    return index[cfg_path]


mmengine.config.utils._get_cfg_metainfo = _cached_cfg_metainfo
# mmengine also reloads pkg_resources for every such base (~0.15 s each).
mmengine.config.config.is_installed = functools.lru_cache(maxsize=None)(
    mmengine.config.config.is_installed)


def table_configs() -> List[str]:
    """Table-row configs (repo-relative); primitives start with ``_``."""
    paths = []
    for folder in CONFIG_DIRS:
        pattern = os.path.join(REPO, 'configs', folder, '*.py')
        paths += [os.path.relpath(p, REPO) for p in sorted(glob.glob(pattern))
                  if not os.path.basename(p).startswith('_')]
    return paths


def all_configs() -> List[str]:
    """Every non-primitive config under ``configs/`` (repo-relative): the
    table rows and any other folder's configs (e.g. the quickstart)."""
    pattern = os.path.join(REPO, 'configs', '**', '*.py')
    paths = [os.path.relpath(p, REPO)
             for p in sorted(glob.glob(pattern, recursive=True))]
    return [p for p in paths if '_base_' not in p.split(os.sep)
            and not os.path.basename(p).startswith('_')]


def primitive_configs() -> List[str]:
    """Primitive configs (repo-relative) under ``configs/*/_base_/``."""
    pattern = os.path.join(REPO, 'configs', '*', '_base_', '**', '*.py')
    return [os.path.relpath(p, REPO)
            for p in sorted(glob.glob(pattern, recursive=True))]


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def load(path: str) -> Config:
    return Config.fromfile(os.path.join(REPO, path))


def scope(cfg: Config) -> ContextManager:
    """The config's default scope for the duration of a ``with`` block.

    Unlike ``init_default_scope`` it leaves the process-wide scope as it
    was, so later tests do not resolve names in a leftover scope.
    """
    return DefaultScope.overwrite_default_scope(cfg.default_scope)


def build(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` under the config's scope, SyncBN reverted to BN.

    Nothing is downloaded: pretrained weights load only in
    ``init_weights()``, which the tests never call.
    """
    with scope(cfg):
        return revert_sync_batchnorm(MODELS.build(cfg.model))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_count(name: str) -> int:
    """Parameter count of a table-row model, built on first request."""
    if name not in PARAMS:
        path = next(p for p in all_configs() if stem(p) == name)
        PARAMS[name] = count(build(load(path)))
    return PARAMS[name]


def zoo_table() -> Any:
    """The ``tools/analysis/zoo_table.py`` module (tools is no package)."""
    path = os.path.join(REPO, 'tools', 'analysis', 'zoo_table.py')
    spec = importlib.util.spec_from_file_location('zoo_table', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

