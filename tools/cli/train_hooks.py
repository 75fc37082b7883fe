"""The guard hooks ``tools/train.py`` adds to every training config.

* ``mmtwins.FiniteLossHook``: stops at the first NaN/inf loss (before that
  iteration's checkpoint). A config that lists it keeps its settings; one
  that lists mmdet's ``CheckInvalidLossHook`` gets it replaced (keeping its
  ``interval``), since that hook's ``assert`` ends in a traceback.
  ``--nan-patience N`` sets its ``patience``.
* ``mmtwins.ClassCoverageHook`` (detection): warns when the data's classes
  only partly match the config's.
* the checkpoint hook: mmengine's ``CheckpointHook`` becomes
  ``mmtwins.SafeCheckpointHook`` (same arguments; crash-safe writes, no
  NaN weights saved, one line on a full disk).
"""
from __future__ import annotations

from typing import Any, List, Optional

from mmengine.config import Config

FINITE = 'mmtwins.FiniteLossHook'
COVERAGE = 'mmtwins.ClassCoverageHook'
SAFE_CHECKPOINT = 'mmtwins.SafeCheckpointHook'


def _name(hook: Any) -> str:
    kind = hook.get('type', '') if isinstance(hook, dict) else ''
    kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    return kind.split('.')[-1]


def add_guard_hooks(cfg: Config, task: str,
                    nan_patience: Optional[int] = None) -> None:
    """Edit ``cfg`` in place (module docstring)."""
    hooks: List[Any] = list(cfg.get('custom_hooks') or [])
    finite = None
    for i, hook in enumerate(hooks):
        if _name(hook) == 'CheckInvalidLossHook':
            hooks[i] = finite = dict(type=FINITE,
                                     interval=hook.get('interval', 1))
        elif _name(hook) == 'FiniteLossHook':
            finite = hook
    if finite is None:
        finite = dict(type=FINITE)
        hooks.append(finite)
    if nan_patience is not None:
        finite['patience'] = nan_patience
    if task == 'detection' and not any(
            _name(h) == 'ClassCoverageHook' for h in hooks):
        hooks.append(dict(type=COVERAGE))
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(checkpoint, dict) and \
            _name(checkpoint) == 'CheckpointHook':
        checkpoint['type'] = SAFE_CHECKPOINT
