"""Ctrl-C (SIGINT) and SIGTERM during training: one line, not tracebacks.

A Ctrl-C reaches the training process and its data-loader workers at once;
the workers die first and the user gets three chained tracebacks ending in
a misleading "DataLoader worker exited unexpectedly", exit status 1. A
SIGTERM (``kill``, a cluster pre-empting the job) ends the process with
status 143 and no word at all.

:func:`report_interrupts` installs handlers for both signals that record
the signal and raise ``KeyboardInterrupt`` in the main thread. Whatever
exception then ends the run (the interrupt itself or a worker's death),
the tool prints one line::

    error: interrupted by SIGINT at iteration 3 of 40; last checkpoint:
    work_dirs/x/iter_2.pth; resume with: python tools/train.py CFG
    --work-dir work_dirs/x --resume

and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM),
as a shell does. A checkpoint being written at that moment is never left
half-written (:mod:`mmtwins.engine.atomic_files`).

Under ``torchrun`` (``tools/dist_train.sh``) the ranks stay silent and the
launcher (:mod:`tools.cli.torchrun`) prints the line for the whole job.
"""
from __future__ import annotations

import os
import os.path as osp
import shlex
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    signum: Optional[int] = None


def _handler(signum, frame) -> None:
    if _State.signum is None:
        _State.signum = signum
    raise KeyboardInterrupt


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def progress() -> str:
    """``'iteration N of M'`` (1-based, as the log counts) from mmengine's
    message hub, or ``'start-up'`` before the first iteration."""
    try:
        from mmengine.logging import MessageHub
        hub = MessageHub.get_current_instance()
    except Exception:
        return 'start-up'
    it, total = hub.get_info('iter'), hub.get_info('max_iters')
    if it is None:
        return 'start-up'
    return f'iteration {it + 1}' + (f' of {total}' if total else '')


def last_checkpoint(work_dir: Optional[str]) -> Optional[str]:
    """The checkpoint ``WORK_DIR/last_checkpoint`` names, if it exists."""
    if not work_dir:
        return None
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            path = f.read().strip()
    except OSError:
        return None
    return path if path and osp.isfile(path) else None


def resume_command(argv: List[str], work_dir: Optional[str]) -> str:
    """``python tools/train.py ARGS --work-dir W --resume`` for ``argv``."""
    args = list(argv)
    if '--resume' in args:  # --resume [CKPT] -> --resume (the newest)
        at = args.index('--resume')
        del args[at:at + 2 if at + 1 < len(args)
                 and not args[at + 1].startswith('-') else at + 1]
    if work_dir and '--work-dir' not in args:
        args += ['--work-dir', work_dir]
    return shlex.join(['python', 'tools/train.py', *args, '--resume'])


@contextmanager
def report_interrupts(argv: List[str],
                      work_dir: Callable[[], Optional[str]]
                      ) -> Iterator[None]:
    """Run the body with the signal handlers; turn an interrupt into one
    line and exit status 128 + signal.

    Args:
        argv (list): the tool's arguments (for the resume command).
        work_dir (callable): returns the run's work dir once known.
    """
    quiet = 'TORCHELASTIC_RUN_ID' in os.environ  # the launcher reports
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _State.signum = None
    try:
        yield
    except BaseException as exc:
        signum = _State.signum
        if signum is None or isinstance(exc, SystemExit):
            raise
        for s in SIGNALS:  # a second Ctrl-C must not break the message
            signal.signal(s, signal.SIG_IGN)
        rank = os.environ.get('RANK', '0')
        if not quiet and rank == '0':
            folder = work_dir()
            ckpt = last_checkpoint(folder)
            if ckpt:
                then = (f'last checkpoint: {ckpt}; resume with: '
                        f'{resume_command(argv, folder)}')
            else:
                then = ('no checkpoint was written yet; start again with: '
                        + shlex.join(['python', 'tools/train.py', *argv]))
            print(f'error: interrupted by {signal_name(signum)} at '
                  f'{progress()}; {then}', file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    finally:
        if _State.signum is None:
            for s, old in previous.items():
                signal.signal(s, old)
