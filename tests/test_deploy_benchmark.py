"""Smoke test of ``tools/analysis/benchmark_deploy.py`` on a tiny RetinaNet
and the mini set: the four backends are timed, int8 is calibrated on
training images and every backend gets its bbox mAP."""
import os.path as osp
import re

import pytest
from deploy_helpers import DET_TINY
from tools_helpers import load_tool, make_mini, write_config

pytestmark = pytest.mark.slow


def test_benchmark_deploy_prints_the_table(tmp_path, capsys):
    mini = make_mini(str(tmp_path / 'mini'), 2, 2)
    cfg = write_config(str(tmp_path / 'det.py'), 'detection', mini,
                       extra=DET_TINY)
    tool = load_tool('analysis/benchmark_deploy.py')
    tool.main([cfg, '--repeats', '2', '--calib', '2', '--no-compile',
               '--eval', '--profile', '3', '--work-dir',
               str(tmp_path / 'work')])
    out = capsys.readouterr().out
    assert re.search(r'# machine: .+, \d+ threads', out), out
    for name in ('onnxruntime fp32', 'PyTorch eager', 'onnxruntime int8'):
        row = re.search(rf'\| {name} \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \|',
                        out)
        assert row and float(row.group(1)) > 0, out
    assert 'PyTorch compiled' not in out.split('|---|')[1]
    assert osp.isfile(tmp_path / 'work' / 'det_int8.onnx')
    # --profile 3: three operator rows per onnxruntime file, most time
    # first, their shares of the kernel time at most 100% together.
    for name in ('fp32', 'int8'):
        part = out.split(f'# onnxruntime {name}: the 3 operator types')[1]
        rows = re.findall(r'^\| (\w+) \| ([\d.]+) \| ([\d.]+)% \|$',
                          part.split('\n\n')[0], re.M)[:3]
        assert len(rows) == 3, part
        assert [float(r[1]) for r in rows] == sorted(
            (float(r[1]) for r in rows), reverse=True)
        assert 0 < sum(float(r[2]) for r in rows) <= 100.05, rows
