"""tools/analysis/benchmark_backbone.py runs end to end (tiny sizes) and
prints one well-formed table row per backbone and size; the figures
themselves are recorded in the README, not asserted."""
import re

from tools_helpers import load_tool

bench = load_tool('analysis/benchmark_backbone.py')


def test_pair_computes_the_same_function():
    import torch
    x = torch.randn(1, 3, 64, 96)
    for arch in bench.MMSEG_ARCHS:
        ours, theirs = bench.build_pair(arch, torch.device('cpu'))
        ours.eval(), theirs.eval()
        with torch.no_grad():
            for a, b in zip(ours(x), theirs(x)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_prints_a_row_per_case(capsys):
    bench.main(['--sizes', '64x96', '--repeats', '1', '--warmup', '0'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines()
            if re.match(r'\| (pcpvt|svt)_s \| 64x96 \|', line)]
    assert len(rows) == 2, out
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert len(cells) == 8
        assert re.fullmatch(r'\d+\.\d\dx', cells[4])
        assert re.fullmatch(r'\d+\.\d\dx', cells[7])
