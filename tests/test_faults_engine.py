"""Fault injection into mmengine's real Runner (the two-weight toy model, a
second per run): NaN/inf loss, non-finite weights, a full disk during a
save, temporary files of live and dead processes, one run per work dir,
resume candidates with NaN weights or without training state."""
import errno
import glob
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from mmengine.runner import Runner
from tools_helpers import REPO, make_mini
from toy_runner import ToyData, ToyModel

from mmtwins.engine import WorkDirLock, find_resume_checkpoint
from mmtwins.engine.atomic_files import AtomicLocalBackend
from mmtwins.engine.hooks.class_coverage_hook import coverage_warning
from mmtwins.errors import (
    CheckpointError,
    CheckpointSaveError,
    NonFiniteError,
    WorkDirBusyError,
)
from mmtwins.utils.checkpoint_fit import non_finite_keys, read_checkpoint


def _runner(work, lr=0.01, max_iters=6, patience=0, keep=-1):
    return Runner(
        model=ToyModel(), work_dir=str(work),
        experiment_name=f'faults-{osp.basename(str(work))}',
        train_dataloader=dict(dataset=ToyData(), batch_size=2,
                              num_workers=0,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(
            type='mmtwins.SafeCheckpointHook', interval=1, by_epoch=False,
            max_keep_ckpts=keep)),
        custom_hooks=[dict(type='mmtwins.FiniteLossHook',
                           patience=patience)])


def _saved(work):
    return sorted(glob.glob(osp.join(str(work), 'iter_*.pth')),
                  key=lambda p: int(p.rsplit('_', 1)[1][:-4]))


def test_nan_loss_stops_before_the_checkpoint(tmp_path):
    runner = _runner(tmp_path, lr=1e8)
    with pytest.raises(NonFiniteError) as exc:
        runner.train()
    msg = str(exc.value)
    saved = _saved(tmp_path)
    # Every checkpoint on disk is finite, and the error names the last.
    assert saved, msg
    for path in saved:
        assert non_finite_keys(read_checkpoint(path)['state_dict']) == []
    stopped = len(saved) + 1
    assert f'training stopped at iteration {stopped}: the loss is ' in msg
    assert f'last good checkpoint: {saved[-1]}' in msg
    assert 'optim_wrapper.optimizer.lr' in msg and '\n' not in msg
    with open(osp.join(str(tmp_path), 'last_checkpoint')) as f:
        assert f.read() == saved[-1]
    # --resume skips a NaN checkpoint (as mmengine's own hook writes them)
    # and takes the newest good one.
    bad = osp.join(str(tmp_path), f'iter_{stopped}.pth')
    ckpt = torch.load(saved[-1], weights_only=False)
    ckpt['state_dict']['linear.weight'][0, 0] = float('nan')
    torch.save(ckpt, bad)
    with open(osp.join(str(tmp_path), 'last_checkpoint'), 'w') as f:
        f.write(bad)
    choice = find_resume_checkpoint(str(tmp_path))
    assert choice.path == saved[-1]
    assert 'non-finite weights' in dict(choice.skipped)[bad]


def test_patience_never_saves_nan_weights(tmp_path):
    runner = _runner(tmp_path, lr=1e8, patience=100)
    with pytest.raises(NonFiniteError) as exc:
        runner.train()
    msg = str(exc.value)
    assert 'weight tensors are NaN or inf' in msg and 'was not saved' in msg
    for path in _saved(tmp_path):
        assert non_finite_keys(read_checkpoint(path)['state_dict']) == []


def test_disk_full_names_file_size_and_previous(tmp_path, monkeypatch):
    put = AtomicLocalBackend.put
    calls = []

    def full_after_first(self, obj, filepath):
        calls.append(filepath)
        if str(filepath).endswith('iter_2.pth'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(AtomicLocalBackend, 'put', full_after_first)
    runner = _runner(tmp_path, max_iters=3)
    with pytest.raises(CheckpointSaveError) as exc:
        runner.train()
    first = osp.join(str(tmp_path), 'iter_1.pth')
    msg = str(exc.value)
    assert msg.startswith('cannot write checkpoint '
                          f'{osp.join(str(tmp_path), "iter_2.pth")}: no '
                          'space left'), msg
    assert 'needs about 0.0 MB' in msg and 'free in' in msg
    assert f'the previous checkpoint {first} is intact' in msg
    assert _saved(tmp_path) == [first]
    assert read_checkpoint(first)['meta']['iter'] == 1
    with open(osp.join(str(tmp_path), 'last_checkpoint')) as f:
        assert f.read() == first


def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_start_up_cleans_only_temp_files_of_dead_processes(tmp_path):
    live = tmp_path / f'.iter_7.pth.tmp-{os.getpid()}'
    dead = tmp_path / f'.iter_5.pth.tmp-{_dead_pid()}'
    live.write_bytes(b'half')
    dead.write_bytes(b'half')
    _runner(tmp_path, max_iters=1).train()
    assert live.exists() and not dead.exists()


HOLD = '''import sys, time
from mmtwins.engine import WorkDirLock
with WorkDirLock(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(60)
'''


def test_one_run_per_work_dir(tmp_path):
    work = str(tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO)
    holder = subprocess.Popen([sys.executable, '-c', HOLD, work],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkDirBusyError) as exc:
            WorkDirLock(work).acquire()
        msg = str(exc.value)
        assert f'work dir {work} is in use by another training run, ' \
               f'process {holder.pid} on ' in msg
        assert 'pass another --work-dir' in msg
        holder.send_signal(signal.SIGKILL)  # dies holding it
        holder.wait()
    finally:
        holder.kill()
    lock_file = osp.join(work, '.train.lock')
    assert json.load(open(lock_file))['pid'] == holder.pid  # left behind
    with WorkDirLock(work) as lock:
        assert lock.took_over['pid'] == holder.pid
        assert json.load(open(lock_file))['pid'] == os.getpid()
    assert not osp.exists(lock_file)  # released and removed


def test_published_model_is_no_training_state(tmp_path):
    from mmtwins.engine.resume import training_state_problem
    _runner(tmp_path, max_iters=1).train()
    ckpt = torch.load(osp.join(str(tmp_path), 'iter_1.pth'),
                      weights_only=False)
    for key in ('optimizer', 'message_hub', 'param_schedulers'):
        ckpt.pop(key, None)  # what mmdet's publish_model keeps: meta, state
    assert 'no training state' in training_state_problem(ckpt)


def test_test_and_infer_refuse_nan_weights(tmp_path):
    from mmtwins.utils.checkpoint_fit import require_finite
    weights = {'a': torch.ones(3), 'b': torch.tensor([1., float('inf')]),
               'n': torch.tensor([1])}
    with pytest.raises(CheckpointError, match=r'non-finite weights \(NaN '
                       r'or inf in 1 of 2 tensors, e.g. b\)'):
        require_finite(weights, 'x.pth')


def test_partly_matching_classes_warn(tmp_path):
    from mmdet.datasets import CocoDataset
    mini = make_mini(str(tmp_path / 'mini'), 2, 1)
    root = osp.join(mini, 'coco')
    # the 2 training images hold all 3 shapes
    ann = osp.join(root, 'annotations', 'instances_train2017.json')
    with open(ann) as f:
        data = json.load(f)
    for cat in data['categories']:
        if cat['name'] == 'triangle':
            cat['name'] = 'dog'
    other = osp.join(root, 'annotations', 'dogs.json')
    with open(other, 'w') as f:
        json.dump(data, f)
    kwargs = dict(data_root=root + '/', data_prefix=dict(img='train2017/'),
                  metainfo=dict(classes=('circle', 'square', 'triangle')),
                  pipeline=[], filter_cfg=None)
    msg = coverage_warning(CocoDataset(ann_file=other, **kwargs))
    assert msg == (
        f'the classes of {other} only partly match the config: config '
        'classes with no annotation (never learned): triangle; categories '
        'of the data that are no config class (their boxes are ignored): '
        'dog; set metainfo=dict(classes=(...)) in the dataset config and '
        "num_classes in the model's heads to the classes to learn")
    assert coverage_warning(CocoDataset(ann_file=ann, **kwargs)) is None
    shutil.rmtree(mini)


def test_interrupt_right_after_a_save_points_at_it(tmp_path, monkeypatch):
    """Ctrl-C arriving just after a checkpoint is in place (before the hook
    returns): ``last_checkpoint`` names that checkpoint, as --resume and
    the interrupt's message read it."""
    put = AtomicLocalBackend.put

    def interrupted_after_second(self, obj, filepath):
        put(self, obj, filepath)
        if str(filepath).endswith('iter_2.pth'):
            raise KeyboardInterrupt

    monkeypatch.setattr(AtomicLocalBackend, 'put', interrupted_after_second)
    runner = _runner(tmp_path, max_iters=4)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    second = osp.join(str(tmp_path), 'iter_2.pth')
    assert _saved(tmp_path)[-1] == second
    assert read_checkpoint(second)['meta']['iter'] == 2
    with open(osp.join(str(tmp_path), 'last_checkpoint')) as f:
        assert f.read() == second
    assert find_resume_checkpoint(str(tmp_path)).path == second
