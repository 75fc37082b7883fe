"""``mmtwins.SafeCheckpointHook``: mmengine's CheckpointHook, crash-safe.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint *before*
writing the new one, writes the new file in place and then rewrites
``last_checkpoint`` in place. A run killed during a save (SIGKILL, a
pre-empted job, a full disk) with ``max_keep_ckpts=1`` is left with no
complete checkpoint, and ``last_checkpoint`` names a deleted or truncated
file. This subclass keeps every option and file name of mmengine's hook and
changes the order and the writes:

1. the checkpoint is written to a hidden temporary file and renamed into
   place (:mod:`mmtwins.engine.atomic_files`);
2. ``last_checkpoint`` is replaced the same way;
3. only then are checkpoints beyond ``max_keep_ckpts`` (and a superseded
   best checkpoint) removed.

At any moment the folder holds at least one complete checkpoint, and
``last_checkpoint`` names a complete file. Temporary files left by a killed
save are removed when training starts again (only those whose writing
process no longer runs).

Two more checks guard every save (regular and best):

* a model with NaN/inf weights is never written: the run stops with
  :class:`~mmtwins.errors.NonFiniteError` naming the last good checkpoint;
* a save that fails for lack of space (``ENOSPC``, ``EDQUOT``) stops the
  run with :class:`~mmtwins.errors.CheckpointSaveError` naming the file,
  the space it needs and the intact previous checkpoint.

Output folders on remote storage (a URI ``out_dir``) or with explicit
``backend_args`` are written as mmengine does.
"""
from __future__ import annotations

import errno
import logging
import os
import os.path as osp
import shutil
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper

from mmtwins.errors import CheckpointSaveError, NonFiniteError
from mmtwins.registry import HOOKS
from mmtwins.utils.checkpoint_fit import non_finite_keys

from ..atomic_files import BACKEND_NAME, atomic_write, leftover_temp_files
from .finite_loss_hook import last_checkpoint_note

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _megabytes(num: float) -> str:
    return f'{num / 2**20:.1f} MB'


def _state_bytes(runner) -> int:
    """About the size of a checkpoint: the model's and the optimizer's
    tensors."""
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    total = sum(v.numel() * v.element_size()
                for v in model.state_dict().values()
                if isinstance(v, torch.Tensor))
    optim = getattr(runner, 'optim_wrapper', None)
    optimizer = getattr(optim, 'optimizer', None)
    for state in getattr(optimizer, 'state', {}).values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def _no_space(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _Drop(logging.Filter):
    """Drops log records containing any of the given texts."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(t in record.getMessage() for t in self.texts)


class _DeferRemoval:
    """A file backend whose ``remove``/``rmtree`` are only recorded."""

    def __init__(self, backend: Any, removals: List[str]) -> None:
        self._backend = backend
        self._removals = removals

    def remove(self, path: str) -> None:
        self._removals.append(path)

    def rmtree(self, path: str) -> None:
        self._removals.append(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves the run without a complete
    checkpoint (module docstring). Takes exactly its arguments."""

    def before_train(self, runner) -> None:
        out_dir = self.out_dir or runner.work_dir
        self._atomic = (self.backend_args is None
                        and self.file_client_args is None
                        and '://' not in str(out_dir))
        if self._atomic:
            self.backend_args = dict(backend=BACKEND_NAME)
        # mmengine's hook and checkpoint saving build a FileClient for
        # compatibility, which logs deprecation warnings about mmengine's
        # own API; they say nothing about the run.
        runner.logger.addFilter(_Drop('"FileClient" will be deprecated',
                                      '"HardDiskBackend" is the alias'))
        super().before_train(runner)
        if self._atomic and is_main_process():
            for path in leftover_temp_files(self.out_dir):
                os.remove(path)
                runner.logger.warning(
                    f'removed {path}, left by a save that was interrupted')

    def _check_finite(self, runner, path: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        bad = non_finite_keys(model.state_dict())
        if bad:
            raise NonFiniteError(
                f'training stopped at iteration {runner.iter + 1}: {len(bad)}'
                f' weight tensors are NaN or inf (e.g. {bad[0]}), so {path} '
                f'was not saved; {last_checkpoint_note(runner)}; lower the '
                'learning rate (optim_wrapper.optimizer.lr) or clip gradients '
                '(optim_wrapper.clip_grad)')

    @contextmanager
    def _guarded_save(self, runner, path: str,
                      previous: Optional[str]) -> Iterator[None]:
        """Check the weights, then turn a full disk into one error."""
        self._check_finite(runner, path)
        try:
            yield
        except OSError as exc:
            if not _no_space(exc):
                raise
            folder = osp.dirname(path) or '.'
            try:
                free = _megabytes(shutil.disk_usage(folder).free)
            except OSError:
                free = '?'
            kept = (f'the previous checkpoint {previous} is intact'
                    if previous else 'no earlier checkpoint exists')
            raise CheckpointSaveError(
                f'cannot write checkpoint {path}: no space left on the '
                f'device (it needs about {_megabytes(_state_bytes(runner))}'
                f', {free} free in {folder}); {kept}; free some space (or '
                'set a smaller max_keep_ckpts) and resume with --resume'
            ) from exc

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        stale = []
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, ckpt_filename)
        previous = runner.message_hub.get_info('last_ckpt')
        saved = False
        try:
            with self._guarded_save(runner, path, previous):
                # as mmengine: the checkpoint's message hub names itself
                self.last_ckpt = path
                runner.message_hub.update_info('last_ckpt', self.last_ckpt)
                try:
                    runner.save_checkpoint(
                        self.out_dir,
                        ckpt_filename,
                        self.file_client_args,
                        save_optimizer=self.save_optimizer,
                        save_param_scheduler=self.save_param_scheduler,
                        meta=meta,
                        by_epoch=self.by_epoch,
                        backend_args=self.backend_args,
                        **self.args)
                    saved = True
                except BaseException:
                    self.last_ckpt = previous
                    runner.message_hub.update_info('last_ckpt', previous)
                    raise
        finally:
            # Once the new checkpoint is complete (written and renamed into
            # place), point at it, even when an interrupt (Ctrl-C, SIGTERM)
            # arrives right after the file is in place, so that the
            # interrupt's message and --resume name this file.
            if is_main_process() and (saved or (
                    self._atomic and osp.isfile(path))):
                atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                             str(path))
        if not is_main_process():
            return
        # Then drop the old ones.
        for old in stale:
            self._remove(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old)))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best file before saving the new
        # one; record those removals and carry them out afterwards.
        backend, removals = self.file_backend, []
        self.file_backend = _DeferRemoval(backend, removals)
        try:
            with self._guarded_save(runner, f'a best checkpoint in '
                                    f'{self.out_dir}',
                                    runner.message_hub.get_info(
                                        'last_ckpt')):
                super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in removals:
            self._remove(path)
