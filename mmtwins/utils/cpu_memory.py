"""Keep freed CPU memory for reuse instead of returning it to the OS.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves
blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages
and unmaps them on free, and it returns the top of its heap to the OS once
more than the trim threshold is free there. A training step that allocates
the same large tensors every iteration therefore touches fresh pages every
iteration: each 4 KiB page costs a page fault and the kernel zeroing it.
For a Twins-S backbone at 512x512, batch 2, that is 0.4-1.3 GiB of fresh
pages per step, about a fifth of the step time on a 2-core CPU, and the
amount depends on what else the process allocated before (the heap's
layout), so step times of two models interleaved in one process swing with
their order.

:func:`reuse_freed_cpu_memory` tells glibc to serve large blocks from its
heap too and never to trim it (``mallopt(M_MMAP_MAX, 0)`` and
``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``): freed memory stays in the
process and the next step reuses it without faults, as the CUDA caching
allocator does on GPUs. The cost: the process keeps its peak heap for its
lifetime (a training run reaches that peak every iteration anyway). It
changes the whole process and cannot be scoped, so only entry points call
it (``tools/train.py`` on the CPU, the benchmarks), never the library on
import. On a C library other than glibc it does nothing and says so.
"""
import ctypes
import ctypes.util
import platform
import resource
from typing import Optional

# mallopt parameter numbers of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_ALL = 2**31 - 1  # mallopt takes an int: the largest threshold

# The ``--malloc`` choices of the tools: keep freed memory, or glibc's own.
MALLOC_POLICIES = ('reuse', 'default')


def _glibc() -> Optional[ctypes.CDLL]:
    """The running glibc, or None under another C library."""
    if platform.libc_ver()[0] != 'glibc':
        return None
    name = ctypes.util.find_library('c') or 'libc.so.6'
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def reuse_freed_cpu_memory() -> str:
    """Make glibc keep freed memory for reuse (module docstring).

    Returns:
        str: One line saying what was done, for the caller to log: that
        freed memory is now kept, or why nothing changed (not glibc,
        ``mallopt`` refused).
    """
    libc = _glibc()
    if libc is None:
        return ('CPU memory: not glibc, the C library\'s own allocator '
                'policy stays')
    # mallopt returns 1 on success, 0 on error.
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or \
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL) != 1:
        return 'CPU memory: glibc mallopt refused, its default policy stays'
    return ('CPU memory: glibc keeps freed memory for reuse (no mmap for '
            'large blocks, no heap trimming), so steps do not page-fault '
            'fresh memory')


def set_malloc_policy(policy: str) -> str:
    """Apply ``policy`` (one of :data:`MALLOC_POLICIES`; ``'default'``
    changes nothing) and return the line that says what holds now."""
    if policy not in MALLOC_POLICIES:
        raise ValueError(f'unknown malloc policy {policy!r}; choose one of '
                         f'{MALLOC_POLICIES}')
    if policy == 'reuse':
        return reuse_freed_cpu_memory()
    return 'CPU memory: glibc default policy (--malloc default)'


def minor_page_faults() -> int:
    """Minor page faults of this process so far (``getrusage``): the
    difference over a call counts the fresh pages it touched."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
