"""Real faults through the real tools: a diverging run, resume after a config
change or from a published model, malicious ``load_from``, damaged and
missing images, Ctrl-C / SIGTERM and a second run in the same work dir, a
full disk, a killed rank of a 2-process run. Every case asserts the exit
status, the one line and what is on disk afterwards."""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tools_helpers import REPO, load_tool, make_mini, write_config

from mmtwins.engine.atomic_files import leftover_temp_files
from mmtwins.utils.checkpoint_fit import non_finite_keys, read_checkpoint

train_tool = load_tool('train.py')
test_tool = load_tool('test.py')

# One block per stage: a model that builds and steps quickly.
ONE_BLOCK = ("model = dict(backbone=dict(arch=dict(_delete_=True, "
             "embed_dims=[64, 128, 320, 512], depths=[1, 1, 1, 1], "
             "num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4], "
             "sr_ratios=[8, 4, 2, 1])))\n")
SCHEDULE = ONE_BLOCK + '''
train_cfg = dict(max_iters={iters}, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
'''


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 2, 1)


def _cfg(tmp_path, mini, iters=2, extra=''):
    return write_config(str(tmp_path / 'seg.py'), 'segmentation', mini,
                        SCHEDULE.format(iters=iters) + extra)


def _run(capsys, tool, argv):
    from mmengine.logging import MMLogger
    before = set(MMLogger._instance_dict)
    code = 0
    try:
        tool.main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:  # see tests/test_tools_errors.py
        for name in set(MMLogger._instance_dict) - before:
            logger = MMLogger._instance_dict.pop(name)
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)
    return code, capsys.readouterr().err


def _last_line(err):
    lines = err.strip().splitlines()
    assert 'Traceback' not in err, err[-3000:]
    return lines[-1]


def _iters(work):
    return sorted(int(re.search(r'iter_(\d+)', p).group(1))
                  for p in glob.glob(osp.join(work, 'iter_*.pth')))


def test_nan_loss_stops_the_run_and_nothing_diverged_is_used(
        capsys, tmp_path, mini):
    work = str(tmp_path / 'w')
    cfg = _cfg(tmp_path, mini, iters=6)
    code, err = _run(capsys, train_tool, [
        cfg, '--work-dir', work, '--cfg-options',
        'optim_wrapper.optimizer.lr=1e6'])
    line = _last_line(err)
    assert code == 2, err[-3000:]
    match = re.match(r'error: training stopped at iteration (\d+): the loss '
                     r'is (nan|inf)', line)
    assert match, line
    stopped = int(match.group(1))
    saved = _iters(work)
    assert saved == list(range(max(1, stopped - 2), stopped))[-2:], saved
    for it in saved:
        state = read_checkpoint(osp.join(work, f'iter_{it}.pth'))
        assert non_finite_keys(state['state_dict']) == []
    if saved:
        assert f'last good checkpoint: {work}/iter_{saved[-1]}.pth' in line
    else:
        assert 'no checkpoint was written yet' in line
    assert not osp.exists(osp.join(work, '.train.lock'))

    # A checkpoint with NaN weights: test.py refuses it, --resume skips it.
    good = osp.join(work, 'iter_1.pth')
    if not osp.exists(good):
        pytest.skip('diverged in the first iteration; nothing to poison')
    ckpt = torch.load(good, weights_only=False)
    key = next(iter(ckpt['state_dict']))
    ckpt['state_dict'][key].fill_(float('nan'))
    poisoned = osp.join(work, 'iter_99.pth')
    torch.save(ckpt, poisoned)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(poisoned)  # as mmengine's own hook would have left it
    floats = sum(v.is_floating_point() for v in ckpt['state_dict'].values())
    code, err = _run(capsys, test_tool, [cfg, poisoned, '--work-dir',
                                         str(tmp_path / 't')])
    assert code == 2
    assert _last_line(err) == (
        f'error: checkpoint {poisoned} has non-finite weights (NaN or inf '
        f'in 1 of {floats} tensors, e.g. {key}): it was '
        'saved by a run that diverged; use an earlier checkpoint of that '
        'run')
    assert not osp.exists(osp.join(str(tmp_path / 't'), 'metrics.json'))
    code, err = _run(capsys, train_tool, [
        cfg, '--work-dir', work, '--resume', '--cfg-options',
        f'train_cfg.max_iters={saved[-1] + 1}'])
    assert f'warning: --resume skips {poisoned}: checkpoint {poisoned} ' \
        'has non-finite weights' in err
    assert f'resuming from {work}/iter_{saved[-1]}.pth' in err
    # The optimizer state it restores holds lr=1e6, so the run diverges
    # again, and stops again.
    assert code == 2
    assert 'error: training stopped at iteration' in _last_line(err)


def test_resume_checks_the_config_and_the_checkpoint(capsys, tmp_path,
                                                     mini):
    work = str(tmp_path / 'w')
    cfg = _cfg(tmp_path, mini, iters=2)
    code, err = _run(capsys, train_tool, [cfg, '--work-dir', work])
    ckpt = osp.join(work, 'iter_2.pth')
    assert code == 0, err[-3000:]
    # A changed model is refused.
    code, err = _run(capsys, train_tool, [
        cfg, '--work-dir', work, '--resume', ckpt, '--cfg-options',
        'train_cfg.max_iters=4', 'model.decode_head.channels=64'])
    assert code == 2
    line = _last_line(err)
    assert f'cannot resume from {ckpt}: the model of {cfg} differs' in line
    assert 'model.decode_head.channels was 128, now 64' in line
    assert f'load_from={ckpt}' in line
    # A schedule that ends before the checkpoint is refused.
    code, err = _run(capsys, train_tool, [cfg, '--work-dir', work,
                                          '--resume'])
    assert code == 2
    assert 'it is at iter 2 and train_cfg.max_iters is 2, so nothing is ' \
        'left to train' in _last_line(err)
    # Data and optimizer changes are listed in one block, then it resumes.
    code, err = _run(capsys, train_tool, [
        cfg, '--work-dir', work, '--resume', '--cfg-options',
        'train_cfg.max_iters=3', 'train_dataloader.batch_size=1',
        'optim_wrapper.optimizer.lr=0.0002'])
    assert code == 0, err[-3000:]
    block = err[err.index('warning: the config differs'):].splitlines()
    assert block[0] == (f'warning: the config differs from the run of '
                        f'{ckpt} in 3 settings; resuming with them:')
    assert sorted(block[1:4]) == [
        '  optim_wrapper.optimizer.lr: 0.001 -> 0.0002 (not applied: '
        'resuming restores the optimizer and scheduler state of the '
        'checkpoint)',
        '  train_cfg.max_iters: 2 -> 3',
        '  train_dataloader.batch_size: 2 -> 1'], block[:4]
    assert _iters(work) == [2, 3]
    # A published model (meta and state_dict only) cannot resume.
    published = str(tmp_path / 'published.pth')
    state = torch.load(ckpt, weights_only=False)
    torch.save(dict(meta=state['meta'], state_dict=state['state_dict']),
               published)
    code, err = _run(capsys, train_tool, [cfg, '--work-dir', work,
                                          '--resume', published])
    assert code == 2
    assert _last_line(err) == (
        f'error: cannot resume from {published}: it has no training state '
        '(no message_hub): it holds weights and meta only, like a published'
        f' model; to start a new run from its weights use --cfg-options '
        f'load_from={published}')
    # Without optimizer state: one warning, then it resumes.
    state.pop('optimizer')
    no_optim = osp.join(work, 'iter_3.pth')
    torch.save(state, no_optim)
    code, err = _run(capsys, train_tool, [
        cfg, '--work-dir', work, '--resume', no_optim, '--cfg-options',
        'train_cfg.max_iters=4'])
    assert code == 0, err[-3000:]
    assert f'warning: {no_optim} holds no optimizer state (saved with ' \
        'save_optimizer=False): the optimizer restarts with fresh ' \
        'momentum/moments' in err


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


@pytest.mark.parametrize('tool', ['load_from', 'pytorch2onnx', 'benchmark'])
def test_malicious_pickle_is_one_line(tool, tmp_path, mini):
    evil = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': _Evil()}, evil)
    cfg = _cfg(tmp_path, mini)
    if tool == 'load_from':
        argv = ['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'),
                '--cfg-options', f'load_from={evil}']
    elif tool == 'pytorch2onnx':
        argv = ['tools/deployment/pytorch2onnx.py', cfg, evil, '--shape',
                '64', '64', '--out-dir', str(tmp_path / 'onnx')]
    else:
        argv = ['tools/analysis/benchmark.py', cfg, evil, '--shape', '64',
                '64', '--num-images', '1', '--warmup', '0']
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'pwned' not in proc.stdout
    line = _last_line(proc.stderr)
    # nothing else on stderr either: no third-party start-up warnings
    assert proc.stderr.strip().splitlines() == [line]
    assert line.startswith('error: refused to load ') and evil in line, line
    assert 'posix.system' in line and 'weights_only' not in line


@pytest.mark.parametrize('fault', ['garbage', 'missing'])
def test_bad_image_in_training_is_one_short_line(fault, capsys, tmp_path,
                                                 mini):
    data = shutil.copytree(mini, str(tmp_path / 'data'))
    folder = osp.join(data, 'coco', 'train2017')  # named by the annotations
    image = osp.join(folder, sorted(os.listdir(folder))[0])
    if fault == 'garbage':
        with open(image, 'wb') as f:
            f.write(os.urandom(3000))
    else:
        os.remove(image)
    cfg = write_config(str(tmp_path / 'det.py'), 'detection', data,
                       ONE_BLOCK + "train_dataloader['num_workers'] = 1\n")
    code, err = _run(capsys, train_tool, [cfg, '--work-dir',
                                          str(tmp_path / 'w')])
    assert code == 2
    line = _last_line(err)
    assert image in line and len(line) < 300, line
    assert ('cannot decode image' if fault == 'garbage' else
            'file not found') in line


# ------------------------------------------------------------ subprocesses
def _popen(argv, log, **kwargs):
    env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE', OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log,
                            **kwargs)


def _wait_for(condition, proc, seconds=240):
    end = time.time() + seconds
    while not condition():
        assert proc.poll() is None, f'exited early: {proc.returncode}'
        assert time.time() < end, 'timed out'
        time.sleep(0.2)


@pytest.mark.slow
def test_lock_and_signals(tmp_path, mini):
    """A second run in the work dir is refused; Ctrl-C (SIGINT to the
    process group, loader workers included) and SIGTERM end in one line
    each, with exit 130 / 143 and the last checkpoint intact."""
    work = str(tmp_path / 'w')
    cfg = _cfg(tmp_path, mini, iters=500,
               extra="train_dataloader['num_workers'] = 1\n")
    with open(tmp_path / 'a.err', 'w') as log:
        run_a = _popen(['tools/train.py', cfg, '--work-dir', work], log,
                       start_new_session=True)
        try:
            _wait_for(lambda: len(_iters(work)) >= 1, run_a)
            second = subprocess.run(
                [sys.executable, 'tools/train.py', cfg, '--work-dir', work],
                cwd=REPO, capture_output=True, text=True, timeout=300)
            assert second.returncode == 2
            assert _last_line(second.stderr).startswith(
                f'error: work dir {work} is in use by another training run,'
                f' process {run_a.pid} on ')
            os.killpg(run_a.pid, signal.SIGINT)  # what Ctrl-C does
            assert run_a.wait(120) == 130
        finally:
            run_a.kill()
    err = (tmp_path / 'a.err').read_text()
    line = _last_line(err)
    match = re.match(r'error: interrupted by SIGINT at iteration (\d+) of '
                     r'500; last checkpoint: (\S+); resume with: python '
                     r'tools/train.py (\S+) --work-dir (\S+) --resume$', line)
    assert match, line
    assert match.group(2) == osp.join(work, f'iter_{_iters(work)[-1]}.pth')
    assert match.group(3) == cfg and match.group(4) == work
    assert read_checkpoint(match.group(2))['meta']['iter'] == \
        _iters(work)[-1]
    assert leftover_temp_files(work) == []
    assert not osp.exists(osp.join(work, '.train.lock'))

    before = _iters(work)[-1]
    with open(tmp_path / 'b.err', 'w') as log:
        run_b = _popen(['tools/train.py', cfg, '--work-dir', work,
                        '--resume'], log)
        try:
            _wait_for(lambda: _iters(work)[-1] > before, run_b)
            run_b.send_signal(signal.SIGTERM)
            assert run_b.wait(120) == 143
        finally:
            run_b.kill()
    line = _last_line((tmp_path / 'b.err').read_text())
    assert re.match(r'error: interrupted by SIGTERM at iteration \d+ of '
                    r'500; last checkpoint: \S+iter_\d+\.pth; resume with: ',
                    line), line
    assert not osp.exists(osp.join(work, '.train.lock'))


FILL = '''"""Test helper: fill the file system of the work dir once the first
checkpoint is written, leaving room for the log only."""
import os
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class FillDiskAfterFirstCheckpoint(Hook):
    priority = 'LOWEST'  # after the checkpoint hook

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter != 0:
            return
        path = osp.join(runner.work_dir, 'filler')
        with open(path, 'wb') as f:
            try:
                while True:
                    f.write(b'x' * 2**20)
                    f.flush()
            except OSError:
                pass
        with open(path, 'r+b') as f:  # room for the log lines
            f.truncate(max(0, os.path.getsize(path) - 2**19))
'''


@pytest.mark.slow
def test_disk_full_during_a_save(tmp_path, mini):
    if shutil.which('unshare') is None or subprocess.run(
            ['unshare', '--user', '--map-root-user', '--mount', 'true'],
            capture_output=True).returncode != 0:
        pytest.fail('needs unshare to mount a private tmpfs')
    (tmp_path / 'fill_hook.py').write_text(FILL)
    cfg = _cfg(tmp_path, mini, iters=3, extra=(
        "custom_imports = dict(imports=['mmtwins', 'fill_hook'])\n"
        "custom_hooks = [dict(type='FillDiskAfterFirstCheckpoint')]\n"))
    work = str(tmp_path / 'small')
    os.makedirs(work)
    script = (f'mount -t tmpfs -o size=1g tmpfs {work} && '
              f'{sys.executable} tools/train.py {cfg} --work-dir {work}; '
              f'code=$?; ls -a {work}; cat {work}/last_checkpoint; echo; '
              f'{sys.executable} -c "import sys, torch; '
              f"print(torch.load(sys.argv[1], weights_only=False)"
              f"['meta']['iter'])\" {work}/iter_1.pth; exit $code")
    proc = subprocess.run(
        ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c',
         script], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=f'{tmp_path}:{REPO}',
                 OMP_NUM_THREADS='1'))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _last_line(proc.stderr)
    assert re.match(
        rf'error: cannot write checkpoint {work}/iter_2\.pth: no space left '
        rf'on the device \(it needs about [\d.]+ MB, [\d.]+ MB free in '
        rf'{work}\); the previous checkpoint {work}/iter_1\.pth is intact',
        line), line
    listing = proc.stdout.split()
    assert 'iter_1.pth' in listing and 'iter_2.pth' not in listing
    assert not any('.tmp-' in name for name in listing)
    assert proc.stdout.strip().splitlines()[-2:] == [
        f'{work}/iter_1.pth', '1']


KILL_RANK = '''"""Test helper: rank 1 SIGKILLs itself at iteration 3."""
import os
import signal

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillRankOne(Hook):

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if get_rank() == 1 and runner.iter == 2:
            os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
def test_killed_rank_is_named_above_torchruns_report(tmp_path, mini):
    (tmp_path / 'kill_rank.py').write_text(KILL_RANK)
    cfg = _cfg(tmp_path, mini, iters=4, extra=(
        "custom_imports = dict(imports=['mmtwins', 'kill_rank'])\n"
        "custom_hooks = [dict(type='KillRankOne')]\n"))
    work = str(tmp_path / 'w')
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work],
        cwd=REPO, capture_output=True, text=True, timeout=400,
        env=dict(os.environ, PYTHONPATH=f'{tmp_path}:{REPO}',
                 OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE'))
    assert proc.returncode == 1, proc.stderr[-4000:]
    err = proc.stderr
    lines = err.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith('error:')]
    assert len(at) == 1, err[-4000:]
    line = lines[at[0]]
    assert re.match(r'error: rank 1 \(local rank 1, pid \d+\) was killed by '
                    r'SIGKILL', line), line
    assert line.endswith(f'resume with: bash tools/dist_train.sh {cfg} 2 '
                         f'--work-dir {work} --resume'), line
    # torchrun's own report follows the line; no rank printed a traceback.
    assert 'Root Cause' in '\n'.join(lines[at[0]:])
    assert 'Traceback' not in err
    # iter_1 was saved before iteration 2's collectives; rank 0 may have
    # been stopped while saving iter_2: nothing half-written either way.
    assert _iters(work) in ([1], [1, 2])
    assert leftover_temp_files(work) == []
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert read_checkpoint(f.read())['meta']['iter'] in (1, 2)


def test_infer_skips_unreadable_files(capsys, tmp_path, mini):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    infer = load_tool('infer.py')
    cfg = _cfg(tmp_path, mini)
    config = Config.fromfile(cfg)
    init_default_scope(config.default_scope)
    ckpt = str(tmp_path / 'seg.pth')
    torch.save({'state_dict': MODELS.build(config.model).state_dict()}, ckpt)
    folder = str(tmp_path / 'images')
    src = osp.join(mini, 'ade', 'ADEChallengeData2016', 'images',
                   'validation')
    shutil.copytree(src, folder)
    good = sorted(os.listdir(folder))
    with open(osp.join(folder, 'broken.jpg'), 'wb') as f:
        f.write(os.urandom(2000))
    open(osp.join(folder, 'empty.png'), 'w').close()
    out = str(tmp_path / 'out')
    with pytest.raises(SystemExit) as exc:
        infer.main([cfg, ckpt, folder, '--out-dir', out])
    assert exc.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f'error: cannot read {folder}/broken.jpg as an image (unsupported '
        'or damaged file); skipped',
        f'error: cannot read {folder}/empty.png as an image (empty file); '
        'skipped',
        f'error: 2 of {len(good) + 2} files could not be read as images '
        f'(named above); the other {len(good)} were processed']
    assert sorted(os.listdir(osp.join(out, 'vis'))) == good
    assert len(os.listdir(osp.join(out, 'preds'))) == len(good)


def test_infer_draws_large_images_downscaled(capsys, tmp_path, mini):
    import cv2
    import numpy as np
    infer = load_tool('infer.py')
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from tools_helpers import DET_CFG
    config = Config.fromfile(DET_CFG)
    init_default_scope(config.default_scope)
    ckpt = str(tmp_path / 'det.pth')
    torch.save({'state_dict': MODELS.build(config.model).state_dict()}, ckpt)
    image = str(tmp_path / 'wide.jpg')
    cv2.imwrite(image, np.full((300, 1200, 3), 127, np.uint8))
    out = str(tmp_path / 'out')
    infer.main([DET_CFG, ckpt, image, '--out-dir', out, '--max-vis-size',
                '400', '--score-thr', '0'])
    drawn = cv2.imread(osp.join(out, 'vis', 'wide.jpg'))
    assert drawn.shape == (100, 400, 3)
    import json
    with open(osp.join(out, 'preds', 'wide.json')) as f:
        pred = json.load(f)
    # the predictions stay in input pixels
    assert pred['bboxes'] and max(b[2] for b in pred['bboxes']) > 400


def test_empty_metrics_are_an_error(capsys, tmp_path, mini):
    """A detector that scores no box above the threshold gives mmdet's
    CocoMetric nothing to evaluate: an error, not an empty report."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = write_config(str(tmp_path / 'det.py'), 'detection', mini,
                       ONE_BLOCK)
    config = Config.fromfile(cfg)
    init_default_scope(config.default_scope)
    ckpt = str(tmp_path / 'det.pth')
    torch.save({'state_dict': MODELS.build(config.model).state_dict()}, ckpt)
    work = str(tmp_path / 'w')
    code, err = _run(capsys, test_tool, [
        cfg, ckpt, '--work-dir', work, '--cfg-options',
        'model.test_cfg.score_thr=1.01'])
    assert code == 2
    assert _last_line(err) == (
        f'error: the evaluator returned no metrics for {ckpt} (no box '
        'scored above model.test_cfg.score_thr): the model is untrained or '
        'broken; no report was written')
    assert not osp.exists(osp.join(work, 'metrics.json'))
