"""tools/analysis/benchmark_backbone.py runs end to end (tiny sizes) and
prints well-formed forward and training rows and the target lines; the
figures themselves are recorded in docs/en/benchmarks.md, not asserted."""
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


def test_prints_rows_and_targets(capsys):
    # --malloc default: the reuse policy would hold for the rest of this
    # test process (tests/test_cpu_memory.py tests it in a child).
    bench.main(['--sizes', '64x96', '--train-sizes', '64x96', '--repeats',
                '1', '--train-repeats', '1', '--warmup', '1', '--malloc',
                'default', '--train-amp'])
    out = capsys.readouterr().out
    assert re.search(r'^# Twins backbone benchmark: .* threads', out, re.M)
    assert re.search(r'^# CPU memory: glibc default policy', out, re.M)
    rows = [line for line in out.splitlines()
            if re.match(r'\| (pcpvt|svt)_s \| 64x96 \|', line)]
    # 2 forward, 2 training and 2 bf16-autocast training rows
    assert len(rows) == 6, out
    forward = [[c.strip() for c in r.strip('|').split('|')] for r in rows[:2]]
    for cells in forward:
        assert len(cells) == 12
        assert re.fullmatch(r'\d+\.\d\dx \((eager|compiled)\)', cells[8])
        assert cells[9] == '-'  # no --compile
        assert re.fullmatch(r'\d+\.\d\dx', cells[10])
    train = [[c.strip() for c in r.strip('|').split('|')] for r in rows[2:4]]
    for cells in train:
        assert len(cells) == 18
        assert cells[8] == cells[11] == cells[16] == '-'  # no --compile
        assert re.fullmatch(r'\d+ / - / \d+ / \d+ / -', cells[14])
        # page faults per step (thousands): mmseg, mmtwins eager, budget
        assert re.fullmatch(r'\d+ / \d+ / -', cells[17])
    assert '## Training step under bf16 autocast' in out
    for row in rows[4:]:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert len(cells) == 8
        assert re.fullmatch(r'\d+\.\d\dx', cells[4])  # speed-up
        assert re.fullmatch(r'\d+\.\d\dx', cells[7])  # memory ratio
    targets = re.findall(r'^- .*: (?:\d+\.\d\dx \((?:met|NOT met)\)|'
                         r'not measured)', out, re.M)
    assert len(targets) == 2 * 2 + 2 * 2, out
    # Without --compile both training targets are checked for the
    # selective mode, with one verdict per backbone.
    verdicts = re.findall(r"^- \w+ 64x96 train \[mmtwins with_cp='selective' "
                          r'.*: both training targets in this one mode: '
                          r'(?:PASS|FAIL)$', out, re.M)
    assert len(verdicts) == 2, out
