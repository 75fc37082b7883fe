"""mmtwins.utils.cpu_memory: after ``reuse_freed_cpu_memory`` a large
tensor allocated again after being freed reuses the freed pages instead of
page-faulting fresh ones. Each case runs in a fresh interpreter, since the
setting holds for the whole process."""
import json
import platform
import subprocess
import sys

# Allocate, fill and free a 64 MiB tensor (above glibc's largest mmap
# threshold) several times; print the page faults of each round after the
# first. The kernel can fault a resident page again for reasons of its own
# (NUMA-balancing scans, reclaim under a cgroup limit), so a test reads the
# quietest round: with reuse some round touches no fresh page, without it
# every round does.
_PROBE = '''
import json, sys, torch
from mmtwins.utils.cpu_memory import minor_page_faults, reuse_freed_cpu_memory
message = reuse_freed_cpu_memory() if sys.argv[1] == 'reuse' else ''
faults = []
for _ in range(8):
    before = minor_page_faults()
    torch.empty(16 * 2**20).fill_(1.0)
    faults.append(minor_page_faults() - before)
print(json.dumps(dict(message=message, rounds=faults[1:],
                      faults=min(faults[1:]))))
'''


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, '-c', _PROBE, mode], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_reuse_stops_fresh_page_faults_for_large_tensors():
    default, reuse = _probe('default'), _probe('reuse')
    if platform.libc_ver()[0] != 'glibc':
        # Another C library: nothing changes, and the message says so.
        assert reuse['message'].startswith('CPU memory: not glibc'), reuse
        return
    assert 'glibc keeps freed memory for reuse' in reuse['message']
    # 64 MiB of fresh 4 KiB pages is 16384 faults (32 with 2 MiB pages);
    # reused heap memory needs next to none.
    assert reuse['faults'] < 16, reuse
    assert default['faults'] > 10 * max(reuse['faults'], 1), (default, reuse)


def test_malloc_policy_default_and_unknown():
    import pytest

    from mmtwins.utils.cpu_memory import set_malloc_policy
    assert set_malloc_policy('default').startswith(
        'CPU memory: glibc default policy')
    with pytest.raises(ValueError, match=r"unknown malloc policy 'keep'"):
        set_malloc_policy('keep')
