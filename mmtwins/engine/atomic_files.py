"""Crash-safe file writes: write a temporary file, then rename it.

``os.replace`` swaps a file in one step on POSIX and Windows, so a reader
(or a resumed run) sees either the old complete file or the new complete
one, never a half-written file, even when the writer is killed mid-write.
Temporary files are hidden names next to the target (``.NAME.tmp-PID``),
so the rename never crosses a file system.

:class:`AtomicLocalBackend` is mmengine's local file backend with such an
atomic ``put``; it is registered as the file backend
``'mmtwins_atomic_local'``, which :class:`~.hooks.SafeCheckpointHook`
passes to mmengine's checkpoint saving.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
from pathlib import Path
from typing import List, Union

from mmengine.fileio import LocalBackend, register_backend

BACKEND_NAME = 'mmtwins_atomic_local'
_TMP_SUFFIX = '.tmp-'


def temp_name(path: str) -> str:
    """The hidden temporary file ``path`` is written to first."""
    head, tail = osp.split(path)
    return osp.join(head, f'.{tail}{_TMP_SUFFIX}{os.getpid()}')


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never partial.

    The data goes to a temporary file in the same folder, is flushed to
    disk, and the file is renamed onto ``path``; on any error the temporary
    file is removed and ``path`` is untouched.
    """
    path = str(path)
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = temp_name(path)
    mode = 'w' if isinstance(data, str) else 'wb'
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a process of
    another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_temp_files(folder: str) -> List[str]:
    """Temporary files of writes that were killed before their rename.

    Only files whose writer (the ``PID`` in ``.NAME.tmp-PID``) no longer
    runs: the temporary file of a save in progress in another process is
    left alone.
    """
    out = []
    for path in glob.glob(osp.join(glob.escape(folder),
                                   f'.*{_TMP_SUFFIX}*')):
        pid = path.rsplit(_TMP_SUFFIX, 1)[1]
        if not pid.isdigit() or not process_alive(int(pid)):
            out.append(path)
    return sorted(out)


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put``/``put_text`` are atomic."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


register_backend(BACKEND_NAME, AtomicLocalBackend, force=True)
