"""``mmtwins.FiniteLossHook``: stop training at the first NaN/inf loss.

It builds on mmdet's ``CheckInvalidLossHook`` (same registry role, same
``interval`` argument) and changes three things:

* it checks every iteration by default (``interval=1``) instead of every
  50th: the loss is already read back to the CPU each iteration for the
  log, so the check costs nothing, and with ``interval=50`` up to 49
  diverged iterations (and a checkpoint of NaN weights) could pass first;
* it runs at ``ABOVE_NORMAL`` priority, before the checkpoint hook
  (``VERY_LOW``) of the same iteration, so a diverged model is never saved;
* instead of an ``assert`` whose message only goes to the log, it raises
  :class:`~mmtwins.errors.NonFiniteError` naming the iteration, the loss
  terms that are not finite and the last checkpoint written.

``patience`` lets that many consecutive non-finite losses pass before the
run stops (default 0: the first one stops it); a finite loss resets the
count. Mixed-precision runs, whose loss scaler skips the update of an
overflowing step, may use a small patience. Weights made non-finite during
that time are still never saved (:class:`~.SafeCheckpointHook` checks
them before every save).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from mmdet.engine.hooks import CheckInvalidLossHook

from mmtwins.errors import NonFiniteError
from mmtwins.registry import HOOKS


def last_checkpoint_note(runner) -> str:
    """``'last good checkpoint: PATH'``, or that there is none yet."""
    path = runner.message_hub.get_info('last_ckpt')
    if path:
        return f'last good checkpoint: {path} (resume from it with --resume)'
    return 'no checkpoint was written yet'


def _value(value: Any) -> Optional[float]:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() \
            else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@HOOKS.register_module()
class FiniteLossHook(CheckInvalidLossHook):
    """Stop training with a one-line error at a NaN/inf loss.

    Args:
        interval (int): check every ``interval`` iterations. Defaults to 1.
        patience (int): consecutive non-finite losses tolerated before the
            run stops. Defaults to 0.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1, patience: int = 0) -> None:
        super().__init__(interval=interval)
        if patience < 0:
            raise ValueError(f'patience must be >= 0, got {patience}')
        self.patience = patience
        self._bad_in_a_row = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not outputs or 'loss' not in outputs or \
                not self.every_n_train_iters(runner, self.interval):
            return
        loss = _value(outputs['loss'])
        if loss is not None and math.isfinite(loss):
            self._bad_in_a_row = 0
            return
        self._bad_in_a_row += 1
        if self._bad_in_a_row <= self.patience:
            runner.logger.warning(
                f'the loss is {loss} at iteration {runner.iter + 1} '
                f'({self._bad_in_a_row} of {self.patience} tolerated)')
            return
        terms = []
        for key, value in outputs.items():
            num = _value(value)
            if key != 'loss' and num is not None and not math.isfinite(num):
                terms.append(f'{key}={num}')
        which = f' ({", ".join(terms[:4])})' if terms else ''
        patience = (f' after {self._bad_in_a_row} in a row'
                    if self.patience else '')
        raise NonFiniteError(
            f'training stopped at iteration {runner.iter + 1}: the loss is '
            f'{loss}{which}{patience}; the diverged model was not saved; '
            f'{last_checkpoint_note(runner)}; lower the learning rate '
            '(optim_wrapper.optimizer.lr) or clip gradients '
            '(optim_wrapper.clip_grad)')
