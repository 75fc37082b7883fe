"""Timing and peak-memory helpers shared by the benchmark scripts.

Peak memory is the largest amount of tensor memory allocated *on top of*
what was live when the measured call started (parameters, inputs):

* CUDA: ``torch.cuda.max_memory_allocated`` after a reset.
* CPU: PyTorch's profiler records every tensor allocation and free with its
  size and time (``profile_memory=True``); replaying them in time order gives
  the exact allocation high-water mark of the call, independent of the
  system allocator's caching.
"""
import argparse
import platform
import statistics
import subprocess
import time
from typing import Callable, List

import torch
from torch.profiler import ProfilerActivity, profile

from mmtwins.utils.cpu_memory import MALLOC_POLICIES


def add_malloc_argument(parser: argparse.ArgumentParser) -> None:
    """``--malloc``: the CPU memory policy of timed runs (apply it with
    :func:`mmtwins.utils.cpu_memory.set_malloc_policy`)."""
    parser.add_argument(
        '--malloc', choices=MALLOC_POLICIES, default='reuse',
        help='reuse: glibc keeps freed memory, so no timed step page-faults '
        'fresh memory and neither side pays for the other\'s allocations '
        '(as tools/train.py on the CPU); default: glibc\'s own policy')


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call (device synchronised)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: List[float]) -> float:
    return statistics.median(values)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated by ``fn`` at its high-water mark (module docstring)."""
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]'
              and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def pick_device(name: str) -> torch.device:
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


def machine(device: torch.device) -> str:
    """The processor (CPU model from lscpu, or the GPU's name) and the
    number of CPU threads PyTorch uses."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or 'unknown CPU'
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True,
                             check=False).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                model = line.split(':', 1)[1].strip()
    except OSError:
        pass
    return f'{model}, {torch.get_num_threads()} threads'
