"""One training run per work dir: a lock file held for the run's life.

Two runs in one work dir overwrite each other's checkpoints, delete them
through ``max_keep_ckpts`` and repoint ``last_checkpoint``. A run therefore
takes :class:`WorkDirLock` on ``WORK_DIR/.train.lock`` before it writes
anything, and a second run in the same folder is refused with
:class:`~mmtwins.errors.WorkDirBusyError` naming the process that holds it.

The lock is an ``fcntl.flock`` on the open file, which the kernel releases
whenever the process ends (normal exit, exception, signal, SIGKILL), so a
lock is never left behind by a dead run: the file of a dead process may
remain, and the next run takes it over and says so. The file records the
holder (pid, host, start time, command) for the message; it is removed on
a normal release. ``flock`` works across processes of one machine and on
NFS v4 / Lustre mounts that support POSIX locks; on storage without lock
support the lock is not taken and the run says so.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import socket
import sys
import time
from typing import Any, Dict, Optional

from mmtwins.errors import WorkDirBusyError

from .atomic_files import process_alive

LOCK_NAME = '.train.lock'

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def read_holder(path: str) -> Dict[str, Any]:
    """What a lock file says about its holder (empty if unreadable)."""
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}


def _describe(holder: Dict[str, Any]) -> str:
    if not holder:
        return 'another process'
    started = holder.get('started')
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started)) \
        if isinstance(started, (int, float)) else '?'
    return (f'process {holder.get("pid", "?")} on {holder.get("host", "?")}'
            f' (started {when}: {holder.get("command", "?")})')


class WorkDirLock:
    """``with WorkDirLock(work_dir):`` holds the work dir for one run.

    Args:
        work_dir (str): the run's work dir (must exist).

    Attributes:
        took_over (dict): the holder recorded by a dead run whose lock file
            was taken over (empty otherwise), for a note to the user.
    """

    def __init__(self, work_dir: str) -> None:
        self.path = osp.join(work_dir, LOCK_NAME)
        self.took_over: Dict[str, Any] = {}
        self.unsupported: Optional[str] = None
        self._fd: Optional[int] = None

    def acquire(self) -> WorkDirLock:
        """Take the lock or raise :class:`WorkDirBusyError`."""
        if fcntl is None:  # pragma: no cover
            self.unsupported = 'no fcntl on this platform'
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = read_holder(self.path)
                raise WorkDirBusyError(
                    f'work dir {osp.dirname(self.path)} is in use by '
                    f'another training run, {_describe(holder)}; wait for '
                    'it to end or pass another --work-dir') from None
            except OSError as exc:  # a file system without locks
                os.close(fd)
                self.unsupported = exc.strerror or str(exc)
                return self
            # The holder before us may have removed the file between our
            # open and our flock: then we hold a lock on a deleted file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = read_holder(self.path)
        if previous and previous.get('host') == socket.gethostname() \
                and not process_alive(int(previous.get('pid', -1))):
            self.took_over = previous
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=time.time(), command=' '.join(sys.argv))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
