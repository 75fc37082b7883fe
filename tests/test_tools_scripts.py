"""The shell launchers: syntax, torchrun / srun command lines, and the
multi-node knobs (NNODES, NODE_RANK, MASTER_ADDR, PORT), checked with stub
``python`` and ``srun`` programs that print what they are given."""
import os
import stat
import subprocess

import pytest
from tools_helpers import REPO

SCRIPTS = ['dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
           'slurm_test.sh', 'quickstart.sh', 'dist_common.sh',
           'slurm_common.sh', 'setup_env.sh', 'run_tests.sh']


def _stub(path, body):
    path.write_text('#!/usr/bin/env bash\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fake_python(tmp_path):
    # Real Python for the free-port one-liner, an echo for torchrun.
    return _stub(tmp_path / 'python', 'if [ "$1" = -c ]; then exec python3 '
                 '"$@"; fi\necho "ARGS $*"\n')


def _run(args, env):
    return subprocess.run(['bash', *args], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=60)


@pytest.mark.parametrize('script', SCRIPTS)
def test_syntax(script):
    subprocess.run(['bash', '-n', f'tools/{script}'], cwd=REPO, check=True)


def test_dist_train_single_node_picks_a_free_port(fake_python):
    procs = [_run(['tools/dist_train.sh', 'cfg.py', '2', '--amp'],
                  dict(PYTHON=fake_python)) for _ in range(2)]
    ports = set()
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        args = proc.stdout.split()
        # torchrun through the wrapper that names a failed rank
        assert args[:3] == ['ARGS', '-m', 'tools.cli.torchrun']
        assert '--retry-hint resume with: bash tools/dist_train.sh cfg.py 2 ' \
            '--amp --resume --' in proc.stdout
        assert '--nproc_per_node=2' in args and '--nnodes=1' in args
        assert args[-4:] == ['cfg.py', '--launcher', 'pytorch', '--amp']
        assert args[-5].endswith('tools/train.py')
        ports.add(next(a for a in args if a.startswith('--master_port=')))
    assert '--master_port=29500' not in ports


def test_dist_test_multi_node_knobs(fake_python):
    env = dict(PYTHON=fake_python, NNODES='2', NODE_RANK='1',
               MASTER_ADDR='10.0.0.7', PORT='29123')
    proc = _run(['tools/dist_test.sh', 'cfg.py', 'model.pth', '4', '--tta'],
                env)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    for expected in ('--nnodes=2', '--node_rank=1', '--nproc_per_node=4',
                     '--master_addr=10.0.0.7', '--master_port=29123'):
        assert expected in args
    assert args[-5:] == ['cfg.py', 'model.pth', '--launcher', 'pytorch',
                         '--tta']
    assert args[:3] == ['ARGS', '-m', 'tools.cli.torchrun']
    assert '--retry-hint run it again with: bash tools/dist_test.sh cfg.py ' \
        'model.pth 4 --tta --' in proc.stdout


@pytest.mark.parametrize('env, message', [
    (dict(NNODES='2'), 'set PORT'),
    (dict(), 'GPUS must be a positive number'),
])
def test_dist_train_bad_input(fake_python, env, message):
    gpus = 'two' if not env else '2'
    proc = _run(['tools/dist_train.sh', 'cfg.py', gpus],
                dict(env, PYTHON=fake_python))
    assert proc.returncode == 2 and message in proc.stderr
    assert 'ARGS' not in proc.stdout


def test_usage_without_arguments():
    for script in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
                   'slurm_test.sh'):
        proc = _run([f'tools/{script}'], {})
        assert proc.returncode == 2 and proc.stderr.startswith('usage:')


def test_slurm_scripts_use_srun(tmp_path):
    _stub(tmp_path / 'srun', 'echo "SRUN $*"\n')
    env = dict(PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='16')
    proc = _run(['tools/slurm_train.sh', 'gpu', 'job', 'cfg.py', 'wd',
                 '--amp'], env)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    for expected in ('-p', 'gpu', '--job-name=job', '--ntasks=16',
                     '--ntasks-per-node=8', '--gres=gpu:8',
                     '--kill-on-bad-exit=1', '--work-dir=wd'):
        assert expected in args
    assert args[-3:] == ['--launcher', 'slurm', '--amp']
    proc = _run(['tools/slurm_test.sh', 'gpu', 'job', 'cfg.py', 'm.pth'],
                env)
    args = proc.stdout.split()
    assert proc.returncode == 0 and args[-4:] == ['cfg.py', 'm.pth',
                                                   '--launcher', 'slurm']
