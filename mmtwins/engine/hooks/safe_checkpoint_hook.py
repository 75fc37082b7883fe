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
save are removed when training starts again. Output folders on remote
storage (a URI ``out_dir``) or with explicit ``backend_args`` are written
as mmengine does.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, List

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from mmtwins.registry import HOOKS

from ..atomic_files import BACKEND_NAME, atomic_write, leftover_temp_files


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
        super().before_train(runner)
        if self._atomic and is_main_process():
            for path in leftover_temp_files(self.out_dir):
                os.remove(path)
                runner.logger.warning(
                    f'removed {path}, left by a save that was interrupted')

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
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
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
        if not is_main_process():
            return
        # The new checkpoint is complete: point at it, then drop old ones.
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                     str(self.last_ckpt))
        for old in stale:
            self._remove(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old)))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best file before saving the new
        # one; record those removals and carry them out afterwards.
        backend, removals = self.file_backend, []
        self.file_backend = _DeferRemoval(backend, removals)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in removals:
            self._remove(path)
