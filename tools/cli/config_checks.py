"""Load and check a config before a tool hands it to mmengine's Runner.

Everything here raises :class:`~tools.cli.errors.ToolError` with a
one-line message naming the problem:

* a config or checkpoint file that does not exist, a config that does not
  parse (the file and line are named);
* ``--cfg-options`` that mmengine cannot merge (a list index out of range);
  keys that are new to the config are accepted, as mmengine accepts them,
  and named once on stderr;
* a dataset folder or annotation file that is missing, or an empty (0-byte)
  image or label file (the message points to the README's data section);
* a work dir that cannot be created;
* a config whose ``default_scope`` is neither ``mmdet`` nor ``mmseg``.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from .errors import DATA_DOC, ToolError

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}

def load_config(path: str,
                cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read ``path`` and merge ``--cfg-options`` into it.

    A config that does not parse (a syntax error, a missing ``_base_``
    file, a name error) is a :class:`ToolError` naming the file.
    """
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as exc:
        # mmengine parses the text, so the file is <unknown> unless the
        # error came from importing a real file.
        name = exc.filename if exc.filename and osp.isfile(exc.filename) \
            else path
        where = f'{name}, line {exc.lineno}'
        if name == path and exc.text and not _has_line(path, exc.text):
            where = f'{path} (or one of its _base_ files)'
        raise ToolError(f'syntax error in config {where}: {exc.msg}; fix '
                        'the config file') from exc
    except Exception as exc:
        msg = ' '.join(str(exc).split())
        raise ToolError(f'cannot read config {path}: {msg}') from exc
    if cfg_options:
        note_new_cfg_options(cfg, cfg_options)
        try:
            cfg.merge_from_dict(cfg_options)
        except (KeyError, IndexError, TypeError) as exc:
            # mmengine prints the whole list it could not index
            msg = re.sub(r'(exceeds the length of) list \[.*',
                         r'\1 the list at that key', _message(exc))
            raise ToolError(f'--cfg-options does not fit {path}: {msg}') \
                from exc
    return cfg


def _has_line(path: str, text: str) -> bool:
    with open(path, encoding='utf-8', errors='replace') as f:
        return text.strip() in f.read()


def _message(exc: BaseException) -> str:
    return str(exc.args[0] if exc.args else exc).strip('"\'')


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


def new_cfg_option_keys(cfg: Config, options: Dict[str, Any]) -> List[str]:
    """The ``--cfg-options`` keys that the config does not have yet.

    mmengine adds such keys (``optim_wrapper.paramwise_cfg.norm_decay_mult``
    is a legitimate one); a misspelt class argument then fails when the
    class is built, but a misspelt key that nothing reads is ignored, so
    the tools name the new keys once.
    """
    new = []
    for key in options:
        node: Any = cfg._cfg_dict
        for part in key.split('.'):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() \
                    and int(part) < len(node):
                node = node[int(part)]
            else:
                new.append(key)
                break
    return new


def note_new_cfg_options(cfg: Config, options: Dict[str, Any]) -> None:
    """Print one line naming the ``--cfg-options`` keys that are new."""
    new = new_cfg_option_keys(cfg, options)
    if new:
        print(f'note: --cfg-options adds {", ".join(new)}, not in the '
              'config before; check the spelling if that is not intended',
              file=sys.stderr)


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


def empty_files(folder: str) -> List[str]:
    """The 0-byte files directly in ``folder`` (a decoder fails on them
    deep inside a data-loader worker, without naming the file)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.path for e in entries
                          if e.is_file() and e.stat().st_size == 0)
    except OSError:
        return []


def check_dataset_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Fail on the first missing dataset folder or annotation file, or on
    empty image/label files in a dataset folder."""
    for kind, path, where in dataset_paths(cfg, loaders):
        if '://' in path:
            continue
        exists = osp.isfile(path) if kind == 'annotation file' else \
            osp.isdir(path)
        if not exists:
            raise _missing(kind, path, where)
        if kind == 'annotation file' and osp.getsize(path) == 0:
            raise ToolError(f'annotation file is empty (0 bytes): {path} '
                            f'(set by {where}); prepare the data again as '
                            f'described in {DATA_DOC}')
        if '.data_prefix.' in where:
            empty = empty_files(path)
            if empty:
                more = f' and {len(empty) - 1} more' if len(empty) > 1 \
                    else ''
                raise ToolError(
                    f'empty (0-byte) file in the dataset: {empty[0]}{more} '
                    f'(in {where}); replace or delete it, see {DATA_DOC}')


def make_work_dir(work_dir: str) -> None:
    """Create the work dir now, so that a path that cannot be created
    fails with one line before anything is built."""
    if '://' in work_dir:
        return
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as exc:
        raise ToolError(f'cannot create the work dir {work_dir}: '
                        f'{exc.strerror or exc}; pass a writable '
                        '--work-dir') from exc
    if not os.access(work_dir, os.W_OK):
        raise ToolError(f'the work dir {work_dir} is not writable; pass a '
                        'writable --work-dir')


def resolve_work_dir(cfg: Config, cli_work_dir: Optional[str],
                     config_path: str) -> str:
    """CLI ``--work-dir``, else the config's, else ``./work_dirs/<stem>``."""
    if cli_work_dir:
        return cli_work_dir
    if cfg.get('work_dir'):
        return cfg.work_dir
    stem = osp.splitext(osp.basename(config_path))[0]
    return osp.join('./work_dirs', stem)
