"""torchrun for ``tools/dist_train.sh`` / ``dist_test.sh``, with one line
on top of its failure report.

``python -m tools.cli.torchrun --retry-hint CMD -- TORCHRUN_ARGS`` runs
``torch.distributed.run`` in this process. When a rank fails, torchrun
stops the others (good) and prints a 40-line ``ChildFailedError`` report.
This wrapper prints first::

    error: rank 1 (local rank 1, pid 4242) was killed by SIGKILL; torchrun
    stopped the other ranks; resume with: CMD

naming the rank that failed first (a rank killed by a signal other than
the SIGTERM torchrun sends itself, else the one with the earliest error),
then torchrun's table of failures, and exits with status 1. A Ctrl-C or
SIGTERM to the launcher gives the interrupt line of
:mod:`tools.cli.interrupts` with exit status 130 / 143.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Dict, List, Tuple


def _signal_of(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f'signal {-exitcode}'


def first_failure(failures: Dict[int, Any]) -> Tuple[int, Any]:
    """The rank whose failure brought the job down, and its failure."""
    def order(item):
        rank, failure = item
        code = failure.exitcode
        own_signal = code < 0 and -code != signal.SIGTERM
        return (not own_signal, failure.timestamp, rank)
    return min(failures.items(), key=order)


def failure_line(failures: Dict[int, Any], hint: str) -> str:
    rank, failure = first_failure(failures)
    code = failure.exitcode
    how = (f'was killed by {_signal_of(code)}' if code < 0 else
           f'exited with status {code}')
    # ranks that failed on their own, not by torchrun's SIGTERM
    others = [r for r, f in failures.items() if r != rank
              and f.exitcode not in (-signal.SIGTERM, 128 + signal.SIGTERM)]
    also = (f' (rank{"s" if len(others) > 1 else ""} '
            f'{", ".join(map(str, sorted(others)))} then failed too)'
            if others else '')
    return (f'error: rank {rank} (local rank {failure.local_rank}, pid '
            f'{failure.pid}) {how}{also}; torchrun stopped the other ranks; '
            f'{hint}')


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--retry-hint', default='')
    parser.add_argument('rest', nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ['--'] else args.rest
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import (
        ChildFailedError,
    )
    from torch.distributed.run import parse_args, run
    try:
        run(parse_args(rest))
    except ChildFailedError as exc:
        print(failure_line(exc.failures, args.retry_hint), file=sys.stderr,
              flush=True)
        print(exc.format_msg(), file=sys.stderr, flush=True)
        sys.exit(1)
    except SignalException as exc:
        sig = exc.sigval
        print(f'error: interrupted by {signal.Signals(sig).name}; '
              f'{args.retry_hint}', file=sys.stderr, flush=True)
        sys.exit(128 + int(sig))


if __name__ == '__main__':
    main(sys.argv[1:])
