"""tools/analysis/benchmark_sasa.py runs end to end (tiny network size),
names the CPU and the SASA implementation, and prints its target lines;
the figures themselves are recorded in docs/en/benchmarks.md, not
asserted."""
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
    assert re.search(r'^Network, 1x3x64x64, .+, \d+ threads; SASA op: fused '
                     r'C\+\+ CPU kernel;', out, re.M), out
    for mode in ('train step \\(fwd\\+bwd\\)', 'forward \\(eval\\)'):
        assert re.search(rf'^\| {mode} \| \d+ \| \d+ \| \d+\.\d\dx \|$', out,
                         re.M), out
    assert re.search(r'^- SASA-ResNet-50 training step <= 2\.0x ResNet-50 '
                     r'\(\d+\.\d\dx\): (met|NOT met)$', out, re.M), out
