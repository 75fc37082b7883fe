"""Interrupt and resume: a run killed right after its first checkpoint and
resumed with ``tools/train.py --resume`` ends with the same weights as an
uninterrupted run of the same length (fixed seed, deterministic settings,
no stochastic layers, no loader worker processes)."""
import glob
import os.path as osp

import pytest
import torch
from tools_helpers import REPO, make_mini, run_tool, write_config

import mmtwins  # noqa: F401  (allowlists mmengine checkpoint globals)

pytestmark = pytest.mark.slow

KILL_HOOK = '''"""Test helper: SIGKILL the training process after the first
checkpoint is on disk, like a crash or a pre-empted job."""
import glob
import os
import os.path as osp
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterFirstCheckpoint(Hook):
    priority = 'LOWEST'  # after CheckpointHook has written the file

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if glob.glob(osp.join(runner.work_dir, 'iter_*.pth')):
            os.kill(os.getpid(), signal.SIGKILL)
'''

DETERMINISTIC = '''
train_cfg = dict(max_iters=4, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=True)
model = dict(backbone=dict(drop_path_rate=0.),
             decode_head=dict(dropout_ratio=0.))
'''


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_interrupted_run_resumes_without_loss(tmp_path):
    mini = make_mini(str(tmp_path / 'mini'), 4, 1)
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini,
                       DETERMINISTIC)
    (tmp_path / 'kill_hook.py').write_text(KILL_HOOK)
    kill_cfg = write_config(
        str(tmp_path / 'seg_kill.py'), 'segmentation', mini, DETERMINISTIC +
        "custom_imports = dict(imports=['mmtwins', 'kill_hook'])\n"
        "custom_hooks = [dict(type='KillAfterFirstCheckpoint')]\n")
    env = dict(PYTHONPATH=f'{tmp_path}:{REPO}')

    straight = str(tmp_path / 'straight')
    _ok(run_tool(['tools/train.py', cfg, '--work-dir', straight]))

    broken = str(tmp_path / 'broken')
    proc = run_tool(['tools/train.py', kill_cfg, '--work-dir', broken],
                    env=env)
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL
    assert [osp.basename(p) for p in
            glob.glob(osp.join(broken, 'iter_*.pth'))] == ['iter_2.pth']

    proc = _ok(run_tool(['tools/train.py', cfg, '--work-dir', broken,
                         '--resume']))
    assert 'resumed' in (proc.stdout + proc.stderr).lower()
    # Safe loading (torch's default) reads them: mmtwins is imported.
    ref = torch.load(osp.join(straight, 'iter_4.pth'), weights_only=True)
    got = torch.load(osp.join(broken, 'iter_4.pth'), weights_only=True)
    assert got['meta']['iter'] == ref['meta']['iter'] == 4
    assert ref['state_dict'].keys() == got['state_dict'].keys()
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(got['state_dict'][key], value, msg=key)
    # The logged loss history survived the interruption too.
    ref_loss = ref['message_hub']['log_scalars']['train/loss'].data[0]
    got_loss = got['message_hub']['log_scalars']['train/loss'].data[0]
    torch.testing.assert_close(torch.as_tensor(got_loss),
                               torch.as_tensor(ref_loss))
