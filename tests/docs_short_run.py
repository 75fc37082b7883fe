"""``python`` for the documentation's runnable blocks: the same command on
less data and a shorter schedule.

``tests/test_docs_blocks.py`` puts a ``python`` (and ``python3``) on the
PATH of each block, and in ``PYTHON`` for the shell tools, that runs

    REAL_PYTHON tests/docs_short_run.py ARGS...

which replaces itself with ``REAL_PYTHON ARGS... EXTRA``, where EXTRA is

* for ``tools/train.py CONFIG`` (also under torchrun): ``--cfg-options``
  that cut the config's schedule to one epoch (epoch-based loops) or two
  iterations (iteration-based loops), validating once;
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


def schedule_options(config: str) -> List[str]:
    """``--cfg-options`` that shorten ``config``'s training loop."""
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    loop = cfg.get('train_cfg') or {}
    if 'max_epochs' in loop:
        return ['--cfg-options', 'train_cfg.max_epochs=1',
                'train_cfg.val_interval=1']
    if 'max_iters' in loop:
        return ['--cfg-options', 'train_cfg.max_iters=2',
                'train_cfg.val_interval=2']
    return []


def extra_args(args: Sequence[str]) -> List[str]:
    """What to append to ``python ARGS``."""
    train = _script_index(args, 'tools/train.py')
    if train >= 0 and train + 1 < len(args):
        return schedule_options(args[train + 1])
    if _script_index(args, 'make_mini_datasets.py') >= 0:
        return list(MINI)
    return []


def main() -> None:
    real = os.environ['DOCS_REAL_PYTHON']
    args = sys.argv[1:]
    os.execv(real, [real, *args, *extra_args(args)])


if __name__ == '__main__':
    main()
