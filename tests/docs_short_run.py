"""``python`` for the documentation's runnable blocks: the same command on
less data and a shorter schedule.

``tests/test_docs_blocks.py`` puts a ``python`` (and ``python3``) on the
PATH of each block, and in ``PYTHON`` for the shell tools, that runs

    REAL_PYTHON tests/docs_short_run.py ARGS...

which replaces itself with ``REAL_PYTHON ARGS... EXTRA``, where EXTRA is

* for ``tools/train.py CONFIG`` (also under torchrun): ``--cfg-options``
  that cut the config's schedule to one epoch (epoch-based loops) or two
  iterations (iteration-based loops), validating once, and for
  ``tools/train.py`` and ``tools/test.py`` of a detector a score threshold
  of 0 (see :func:`short_run_options`);
* for ``tools/dataset_converters/make_mini_datasets.py``: 8 training and
  4 validation images per set;
* nothing for anything else.
"""
from __future__ import annotations

import os
import sys
from typing import List, Sequence

MINI = ['--num-train', '8', '--num-val', '4']


def _script_index(args: Sequence[str], name: str) -> int:
    for i, arg in enumerate(args):
        if arg.replace(os.sep, '/').endswith(name):
            return i
    return -1


def short_run_options(config: str, train: bool) -> List[str]:
    """``--cfg-options`` for ``config``: a training loop of one epoch or two
    iterations; a detector keeps boxes of any score (after so short a
    schedule every score is below the usual threshold, and a test without
    any box has no mAP)."""
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    options = []
    loop = cfg.get('train_cfg') or {}
    if train and 'max_epochs' in loop:
        options += ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1']
    elif train and 'max_iters' in loop:
        options += ['train_cfg.max_iters=2', 'train_cfg.val_interval=2']
    if 'score_thr' in (cfg.model.get('test_cfg') or {}):
        options.append('model.test_cfg.score_thr=0.0')
    return ['--cfg-options', *options] if options else []


def extra_args(args: Sequence[str]) -> List[str]:
    """What to append to ``python ARGS``."""
    for tool in ('tools/train.py', 'tools/test.py'):
        at = _script_index(args, tool)
        if at >= 0 and at + 1 < len(args):
            return short_run_options(args[at + 1], tool == 'tools/train.py')
    if _script_index(args, 'make_mini_datasets.py') >= 0:
        return list(MINI)
    return []


def main() -> None:
    real = os.environ['DOCS_REAL_PYTHON']
    args = sys.argv[1:]
    os.execv(real, [real, *args, *extra_args(args)])


if __name__ == '__main__':
    main()
