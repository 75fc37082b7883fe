"""What ``--resume`` checks against the checkpoint it resumes from.

mmengine resumes whatever the current config says, silently: a changed
batch size makes it skip the wrong number of samples, a shorter schedule
ends at once, a changed model loads non-strictly. The checkpoint holds the
config of its run (``meta.cfg``), so :func:`check_resume` compares:

* the model (``model``, apart from ``test_cfg``, ``init_cfg`` and
  ``pretrained``, which training does not use after the start): any change
  is refused; to train a changed model from these weights, start a new run
  with ``load_from``;
* the data, schedule and optimizer settings (``train_dataloader``,
  ``train_cfg``, ``optim_wrapper``, ``param_scheduler``,
  ``auto_scale_lr``, ``randomness``): the run resumes, and one warning
  block lists every changed key with its old and new value. Changes to
  ``optim_wrapper.optimizer``, ``optim_wrapper.paramwise_cfg`` and
  ``param_scheduler`` are marked as not applied: mmengine restores the
  optimizer's parameter groups (lr, weight decay, momentum) and the
  schedulers' state from the checkpoint, so the old values stay in force;
* a schedule that ends at or before the checkpoint (``max_iters`` /
  ``max_epochs``): refused, there would be nothing left to train.

A checkpoint without optimizer state (saved with ``save_optimizer=False``)
resumes with a fresh optimizer, after one warning line.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mmengine.config import Config

from .errors import ToolError

#: Top-level keys whose changes are listed in the warning block.
WARN_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper',
             'param_scheduler', 'auto_scale_lr', 'randomness')
#: Prefixes of the settings that resuming restores from the checkpoint's
#: optimizer and scheduler state (a new value in the config has no effect).
RESTORED = ('optim_wrapper.optimizer.', 'optim_wrapper.paramwise_cfg.',
            'param_scheduler')
#: Keys inside ``model`` that do not change what is trained.
MODEL_IGNORED = ('test_cfg', 'init_cfg', 'pretrained')
_MISSING = '<not set>'


def flatten(node: Any, prefix: str = '') -> Dict[str, Any]:
    """``{dotted key: leaf value}`` of nested dicts and lists."""
    out: Dict[str, Any] = {}
    if isinstance(node, Mapping):
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return {prefix: node}
    if not items:
        return {prefix: node}
    for key, value in items:
        out.update(flatten(value, f'{prefix}.{key}' if prefix else key))
    return out


def _plain(value: Any) -> Any:
    """Config dicts and lists as plain Python, with the CPU SyncBN->BN
    swap of :mod:`.dist_env` undone so that both sides compare alike."""
    if isinstance(value, Mapping):
        out = {k: _plain(v) for k, v in value.items()}
        if out.get('type') in ('SyncBN', 'MMSyncBN'):
            out['type'] = 'BN'
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_changes(old: Any, new: Any,
                   prefix: str) -> List[Tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every leaf that differs."""
    before = flatten(_plain(old), prefix)
    after = flatten(_plain(new), prefix)
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, _MISSING), after.get(key, _MISSING)
        if a != b:
            out.append((key, a, b))
    return out


def saved_config(checkpoint: Mapping) -> Optional[Config]:
    """The config a checkpoint was trained with (``meta.cfg``), or None
    when it has none or it does not parse."""
    text = (checkpoint.get('meta') or {}).get('cfg')
    if not isinstance(text, str) or not text:
        return None
    try:
        return Config.fromstring(text, file_format='.py')
    except Exception:
        return None


def _model_part(model: Any) -> Dict[str, Any]:
    model = dict(model or {})
    for key in MODEL_IGNORED:
        model.pop(key, None)
    return model


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def check_resume(cfg: Config, checkpoint: Mapping, path: str,
                 config_path: str) -> None:
    """Refuse or warn about what changed since ``checkpoint`` was saved
    (module docstring); print the warnings on stderr."""
    if 'optimizer' not in checkpoint:
        print(f'warning: {path} holds no optimizer state (saved with '
              'save_optimizer=False): the optimizer restarts with fresh '
              'momentum/moments', file=sys.stderr)
    old = saved_config(checkpoint)
    if old is None:
        print(f'warning: {path} does not hold the config of its run: the '
              'settings cannot be compared with it', file=sys.stderr)
        return
    model = config_changes(_model_part(old.get('model')),
                           _model_part(cfg.get('model')), 'model')
    if model:
        key, a, b = model[0]
        more = f' (and {len(model) - 1} more)' if len(model) > 1 else ''
        raise ToolError(
            f'cannot resume from {path}: the model of {config_path} differs '
            f'from the one it was trained with: {key} was {_show(a)}, now '
            f'{_show(b)}{more}; resume with the config of that run, or '
            f'start a new run from its weights with --cfg-options '
            f'load_from={path}')
    meta = checkpoint.get('meta') or {}
    loop = cfg.get('train_cfg') or {}
    for key, done in (('max_iters', meta.get('iter')),
                      ('max_epochs', meta.get('epoch'))):
        limit = loop.get(key)
        by_this = key == 'max_iters' or loop.get('by_epoch', True)
        if isinstance(limit, int) and isinstance(done, int) and by_this \
                and 0 < limit <= done:
            raise ToolError(
                f'cannot resume from {path}: it is at {key[4:-1]} {done} '
                f'and train_cfg.{key} is {limit}, so nothing is left to '
                f'train; raise train_cfg.{key} to continue')
    changes = []
    for key in WARN_KEYS:
        changes += config_changes(old.get(key), cfg.get(key), key)
    if changes:
        lines = [f'warning: the config differs from the run of {path} in '
                 f'{len(changes)} settings; resuming with them:']
        for key, a, b in changes:
            kept = ' (not applied: resuming restores the optimizer and ' \
                'scheduler state of the checkpoint)' \
                if key.startswith(RESTORED) else ''
            lines.append(f'  {key}: {_show(a)} -> {_show(b)}{kept}')
        print('\n'.join(lines), file=sys.stderr)
