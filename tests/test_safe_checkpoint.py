"""Crash-safe checkpoints (``mmtwins.SafeCheckpointHook``) and the choice of
the checkpoint ``--resume`` takes.

The end-to-end case is a real SIGKILL of ``tools/train.py`` while it writes
a checkpoint with ``max_keep_ckpts=1``, the setting that lost every
checkpoint with mmengine's own hook.
"""
import glob
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner
from tools_helpers import REPO, make_mini, run_tool, write_config
from toy_runner import ToyData, ToyModel

from mmtwins.engine import SafeCheckpointHook, find_resume_checkpoint
from mmtwins.engine.atomic_files import atomic_write, leftover_temp_files
from mmtwins.utils.checkpoint_fit import read_checkpoint


def _training_ckpt(path, it, size=8):
    torch.save(dict(meta=dict(epoch=0, iter=it), message_hub={},
                    state_dict={'w': torch.zeros(size)}), str(path))
    return str(path)


def test_resume_takes_the_newest_checkpoint_that_loads(tmp_path):
    good = _training_ckpt(tmp_path / 'iter_2.pth', 2)
    cut = _training_ckpt(tmp_path / 'iter_4.pth', 4, size=100000)
    with open(cut, 'rb') as f:
        head = f.read(2000)
    with open(cut, 'wb') as f:
        f.write(head)
    torch.save({'w': torch.zeros(1)}, str(tmp_path / 'weights_9.pth'))
    _training_ckpt(tmp_path / 'best_mIoU_iter_3.pth', 3)
    (tmp_path / 'last_checkpoint').write_text(cut)

    choice = find_resume_checkpoint(str(tmp_path))
    assert choice.path == good
    skipped = dict(choice.skipped)
    assert list(skipped) == [cut, str(tmp_path / 'weights_9.pth')]
    assert 'no training state' in skipped[str(tmp_path / 'weights_9.pth')]
    assert f'cannot read checkpoint {cut}' in skipped[cut]


@pytest.mark.parametrize('pointer, reason', [
    ('', 'it is empty'), ('/nowhere/iter_3.pth', 'but not found')])
def test_resume_with_a_broken_pointer(tmp_path, pointer, reason):
    (tmp_path / 'last_checkpoint').write_text(pointer)
    choice = find_resume_checkpoint(str(tmp_path))
    assert choice.path is None
    assert len(choice.skipped) == 1 and reason in choice.skipped[0][1]
    good = _training_ckpt(tmp_path / 'epoch_1.pth', 1)
    assert find_resume_checkpoint(str(tmp_path)).path == good


def test_nothing_to_resume(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) == (None, [])
    assert find_resume_checkpoint(str(tmp_path / 'missing')) == (None, [])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / 'last_checkpoint')
    atomic_write(path, 'old')

    class Boom:  # not bytes: the write fails half-way through the call
        def __len__(self):
            raise RuntimeError('boom')

    with pytest.raises(TypeError):
        atomic_write(path, Boom())
    with open(path) as f:
        assert f.read() == 'old'
    assert leftover_temp_files(str(tmp_path)) == []


def test_hook_keeps_the_newest_and_points_at_it(tmp_path):
    """Same files as mmengine's hook: the newest ``max_keep_ckpts``, and
    ``last_checkpoint`` naming the newest; no temporary file left."""
    work = str(tmp_path)
    # A temporary file from a save that was killed earlier (its writer, a
    # process that has ended, named by its pid).
    writer = subprocess.Popen([sys.executable, '-c', 'pass'])
    writer.wait()
    stale = osp.join(work, f'.iter_9.pth.tmp-{writer.pid}')
    open(stale, 'wb').close()
    runner = Runner(
        model=ToyModel(), work_dir=work, experiment_name='safe-hook',
        train_dataloader=dict(dataset=ToyData(), batch_size=2,
                              num_workers=0,
                              sampler=dict(type='DefaultSampler')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(checkpoint=dict(
            type='mmtwins.SafeCheckpointHook', interval=2, by_epoch=False,
            max_keep_ckpts=2)))
    assert any(isinstance(h, SafeCheckpointHook) for h in runner.hooks)
    runner.train()
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(work,
                                                               '*.pth')))
    assert names == ['iter_4.pth', 'iter_6.pth']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work, 'iter_6.pth')
    assert read_checkpoint(osp.join(work, 'iter_6.pth'))['meta']['iter'] == 6
    assert leftover_temp_files(work) == []
    assert not osp.exists(stale)


KILL_HOOK = '''"""Test helper: SIGKILL the training process while it writes its
second checkpoint (a temporary file of it exists and is growing)."""
import glob
import os
import os.path as osp
import signal
import threading
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillDuringSecondSave(Hook):
    saves = 0

    def before_save_checkpoint(self, runner, checkpoint):
        KillDuringSecondSave.saves += 1
        if KillDuringSecondSave.saves == 2:
            threading.Thread(target=self._watch, args=(runner.work_dir, ),
                             daemon=True).start()

    @staticmethod
    def _watch(work_dir):
        pattern = osp.join(work_dir, '.iter_2.pth.tmp-*')
        while True:
            for path in glob.glob(pattern):
                if osp.getsize(path) > 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0002)
'''

SETTINGS = '''
train_cfg = dict(max_iters=3, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))
'''


@pytest.mark.slow
def test_sigkill_during_a_save_loses_nothing(tmp_path):
    mini = make_mini(str(tmp_path / 'mini'), 2, 1)
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini,
                       SETTINGS)
    (tmp_path / 'kill_hook.py').write_text(KILL_HOOK)
    kill_cfg = write_config(
        str(tmp_path / 'seg_kill.py'), 'segmentation', mini, SETTINGS +
        "custom_imports = dict(imports=['mmtwins', 'kill_hook'])\n"
        "custom_hooks = [dict(type='KillDuringSecondSave')]\n")
    work = str(tmp_path / 'work')
    proc = run_tool(['tools/train.py', kill_cfg, '--work-dir', work],
                    env=dict(PYTHONPATH=f'{tmp_path}:{REPO}'))
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL

    # Killed while iter_2.pth was being written: its temporary file is
    # there, iter_2.pth is not, and iter_1.pth is complete and named.
    temps = [osp.basename(p) for p in leftover_temp_files(work)]
    assert len(temps) == 1 and re.fullmatch(r'\.iter_2\.pth\.tmp-\d+',
                                            temps[0]), temps
    assert not osp.exists(osp.join(work, 'iter_2.pth'))
    first = osp.join(work, 'iter_1.pth')
    assert read_checkpoint(first)['meta']['iter'] == 1
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == first

    proc = run_tool(['tools/train.py', cfg, '--work-dir', work, '--resume'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'resuming from {first}' in proc.stderr
    assert [osp.basename(p) for p in glob.glob(osp.join(work, '*.pth'))] \
        == ['iter_3.pth']
    assert read_checkpoint(osp.join(work, 'iter_3.pth'))['meta']['iter'] == 3
    assert leftover_temp_files(work) == []
