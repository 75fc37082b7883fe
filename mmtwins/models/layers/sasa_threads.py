"""How SASA's CPU kernel uses threads, decided inside the op.

The offset loop of :mod:`.sasa_ops` issues thousands of small element-wise
ops. Left to ATen, every one of them is a parallel region over all intra-op
threads, and on a machine whose cores are shared with other work each
region waits for its slowest thread. Instead the ``batch * heads`` slices
are split into as many contiguous parts as PyTorch has intra-op threads
(``torch.get_num_threads()``), and each part runs on a worker thread of a
small pool whose ops are single-threaded: each worker lowers its *own*
OpenMP thread count to 1 (``omp_set_num_threads`` sets the calling thread's
value only, per the OpenMP specification). No process-wide setting changes:
``torch.get_num_threads()`` and every other thread keep their values.

The pool is created on first use, re-created when the thread count changes
or in a forked child (threads do not survive ``fork``), and only used on
CPU. Where PyTorch's OpenMP runtime cannot be found (PyTorch built without
OpenMP), everything runs on the calling thread.
"""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

import torch

_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_openmp: Optional[ctypes.CDLL] = None
_openmp_searched = False


def _find_openmp() -> Optional[ctypes.CDLL]:
    """The OpenMP runtime PyTorch loaded (libgomp or libiomp), or None."""
    global _openmp, _openmp_searched
    if not _openmp_searched:
        _openmp_searched = True
        try:
            with open('/proc/self/maps') as maps:
                paths = [line.split()[-1] for line in maps
                         if 'libgomp' in line or 'libiomp' in line]
        except OSError:
            paths = []
        for path in paths:
            try:
                library = ctypes.CDLL(path)
                library.omp_set_num_threads.argtypes = [ctypes.c_int]
                _openmp = library
                break
            except (OSError, AttributeError):
                continue
    return _openmp


def _single_threaded_worker() -> None:
    """Pool initializer: this worker's ATen ops use one thread."""
    # The first parallel op of a thread initialises its OpenMP settings
    # from PyTorch's; lower this thread's own count afterwards.
    torch.ones(1).add_(1)
    torch.get_num_threads()
    _openmp.omp_set_num_threads(1)


def _forget_pool() -> None:
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_pool)


def _get_pool(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(
                size,
                thread_name_prefix='mmtwins-sasa',
                initializer=_single_threaded_worker)
            _pool_size = size
        return _pool


def partitions(batch_heads: int, device: torch.device) -> List[slice]:
    """Contiguous ``batch * heads`` ranges, one per worker thread."""
    workers = 1
    if device.type == 'cpu' and _find_openmp() is not None:
        workers = max(1, min(torch.get_num_threads(), batch_heads))
    bounds = [i * batch_heads // workers for i in range(workers + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def run(work: Callable[[slice], None], batch_heads: int,
        device: torch.device) -> None:
    """Call ``work`` on every partition of ``range(batch_heads)``.

    The partitions touch disjoint slices, so they need no locking. Workers
    run without grad mode and in the caller's inference mode (both are per
    thread), like the op itself.
    """
    parts = partitions(batch_heads, device)
    if len(parts) == 1:
        work(parts[0])
        return
    inference = torch.is_inference_mode_enabled()

    def no_grad_work(part: slice) -> None:
        # inference_mode(False) turns grad mode on; no_grad comes after.
        with torch.inference_mode(inference), torch.no_grad():
            work(part)

    for _ in _get_pool(len(parts)).map(no_grad_work, parts):
        pass
