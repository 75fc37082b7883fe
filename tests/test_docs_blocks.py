"""The documentation's code blocks work as written.

Markers (docs/en/notes/writing_docs.md): ``<!-- runnable -->`` bash blocks
run, page by page in the order of the pages, in one scratch copy of the
repository whose ``python`` (tests/docs_short_run.py) shortens training
schedules and makes the mini datasets small; a block whose exact text
already ran there is not run again (pages repeat the commands a later
block builds on). ``<!-- runnable -->`` python blocks are executed;
``<!-- config -->`` blocks are loaded as mmdet/mmseg configs and their
``model`` is built. ``<!-- needs: ... -->`` blocks are only checked for
the paths they name (tests/test_docs.py).
"""
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from docs_helpers import REPO, code_blocks, doc_files

pytestmark = pytest.mark.slow

# Top-level entries a scratch copy gets fresh instead of linked.
FRESH = {'data', 'work_dirs', 'outputs', '.git'}


def _runnable(lang, marker='runnable'):
    """(page, blocks) for every page with blocks of ``lang`` and
    ``marker``, in page order."""
    pages = []
    for page in doc_files():
        blocks = [b for b in code_blocks(page)
                  if b.lang == lang and b.marker == marker]
        if blocks:
            pages.append((page, blocks))
    return pages


BASH_PAGES = _runnable('bash')


def _scratch(tmp_path):
    """A scratch copy of the repository (links to its files) with a
    ``python`` that shortens what the blocks run; returns (root, env)."""
    root = tmp_path / 'repo'
    root.mkdir()
    for name in os.listdir(REPO):
        if name not in FRESH:
            os.symlink(osp.join(REPO, name), root / name)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    wrapper = (f'#!/bin/sh\nexec "{sys.executable}" '
               f'"{osp.join(REPO, "tests", "docs_short_run.py")}" "$@"\n')
    for name in ('python', 'python3'):
        (bin_dir / name).write_text(wrapper)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env.update(
        PATH=f'{bin_dir}{os.pathsep}{env.get("PATH", "")}',
        PYTHON=str(bin_dir / 'python'),
        DOCS_REAL_PYTHON=sys.executable,
        PYTHONPATH=REPO + (os.pathsep + env['PYTHONPATH']
                           if env.get('PYTHONPATH') else ''),
        OMP_WAIT_POLICY='PASSIVE',
        MPLBACKEND='Agg')
    return root, env


@pytest.fixture(scope='module')
def shared_scratch(tmp_path_factory):
    """One scratch copy for the bash blocks of every page, and the texts
    of the blocks that ran in it."""
    root, env = _scratch(tmp_path_factory.mktemp('docs_blocks'))
    return root, env, set()


@pytest.mark.parametrize(
    'page,blocks', BASH_PAGES,
    ids=[osp.relpath(p, REPO) for p, _ in BASH_PAGES])
def test_runnable_bash_blocks(page, blocks, shared_scratch):
    root, env, done = shared_scratch
    for block in blocks:
        if block.code in done:
            continue
        proc = subprocess.run(
            ['bash', '-e', '-o', 'pipefail', '-c', block.code], cwd=root,
            env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f'{block.where()} failed:\n{block.code}\n'
            f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
        done.add(block.code)
        if 'quickstart.sh' in block.code:
            # what the docs say it prints and writes
            assert '[quickstart] bbox_mAP' in proc.stdout
            assert (root / 'work_dirs' / 'quickstart' /
                    'report.md').is_file() or \
                (root / 'work_dirs' / 'quickstart_sasa' /
                 'report.md').is_file()


_PY_RUNNER = textwrap.dedent('''
    import json, sys, traceback
    failed = []
    for where, code in json.load(open(sys.argv[1])):
        try:
            exec(compile(code, where, 'exec'), {'__name__': '__main__'})
        except Exception:
            failed.append(where + '\\n' + traceback.format_exc())
    print('\\n'.join(failed))
    sys.exit(1 if failed else 0)
''')

_CONFIG_RUNNER = textwrap.dedent('''
    import json, os, sys, traceback
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    failed = []
    for i, (where, code) in enumerate(json.load(open(sys.argv[1]))):
        path = os.path.join(sys.argv[2], f'config_{i}.py')
        with open(path, 'w') as f:
            f.write(code)
        try:
            cfg = Config.fromfile(path)
            init_default_scope(cfg.get('default_scope', 'mmdet'))
            model = MODELS.build(cfg.model)
            assert sum(p.numel() for p in model.parameters()) > 0
        except Exception:
            failed.append(where + '\\n' + traceback.format_exc())
    print('\\n'.join(failed))
    sys.exit(1 if failed else 0)
''')


def _run_all(tmp_path, runner, marker):
    blocks = [(b.where(), b.code) for _, page_blocks in
              _runnable('python', marker) for b in page_blocks]
    assert blocks, f'no {marker} python block in the docs'
    listing = tmp_path / 'blocks.json'
    listing.write_text(json.dumps(blocks))
    script = tmp_path / 'runner.py'
    script.write_text(runner)
    root, env = _scratch(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(script), str(listing), str(tmp_path)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return blocks


def test_runnable_python_blocks(tmp_path):
    _run_all(tmp_path, _PY_RUNNER, 'runnable')


def test_config_blocks_build(tmp_path):
    _run_all(tmp_path, _CONFIG_RUNNER, 'config')
