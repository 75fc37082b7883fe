"""tools/analysis/benchmark_sasa.py runs end to end (tiny network size),
names the CPU and the SASA implementation, compares both networks (the
backbone alone and under the FPN neck) and prints its target lines; the
figures themselves are recorded in the docs, not asserted."""
import re

from tools_helpers import load_tool

bench = load_tool('analysis/benchmark_sasa.py')


def test_network_rows_and_targets(capsys):
    # --malloc default: the reuse policy would hold for the rest of this
    # test process (tests/test_cpu_memory.py tests it in a child).
    bench.main(['--no-layer', '--network', '--network-size', '64', '64',
                '--pairs', '1', '--malloc', 'default'])
    out = capsys.readouterr().out
    assert re.search(r'^# CPU memory: glibc default policy', out, re.M), out
    assert re.search(r'^Networks, 1x3x64x64, .+, \d+ threads; SASA op: '
                     r'fused C\+\+ CPU kernel;', out, re.M), out
    for network in ('ResNet-50', 'ResNet-50 \\+ FPN'):
        for mode in ('train step \\(fwd\\+bwd\\)', 'forward \\(eval\\)'):
            assert re.search(rf'^\| {network} \| {mode} \| \d+ \| \d+ \| '
                             r'\d+\.\d\dx \|$', out, re.M), out
        for what in ('train step', 'forward'):
            assert re.search(rf'^- SASA-{network} {what} <= 1\.1x '
                             rf'{network} \(\d+\.\d\dx\): (met|NOT met)$',
                             out, re.M), out
    assert 'issue' not in out.lower()
