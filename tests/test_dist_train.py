"""tools/dist_train.sh on CPU: two torchrun processes over gloo."""
import glob
import os.path as osp
import re

import pytest
from tools_helpers import make_mini, run_tool, write_config

pytestmark = pytest.mark.slow


def test_two_process_training_on_cpu(tmp_path):
    mini = make_mini(str(tmp_path / 'mini'), 4, 2)
    cfg = write_config(str(tmp_path / 'seg.py'), 'segmentation', mini)
    work = str(tmp_path / 'work')
    proc = run_tool(['tools/dist_train.sh', cfg, '2', '--work-dir', work],
                    env=dict(OMP_NUM_THREADS='1'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # torchrun picked a free port (none was given) and started 2 ranks.
    assert re.search(r'\[dist\] nodes=1 .*procs_per_node=2 '
                     r'master=127\.0\.0\.1:\d+', log)
    assert re.search(r'Distributed training: True', log)
    assert re.search(r'GPU number: 2|world_size: 2|World size: 2', log)
    # Only rank 0 writes checkpoints: exactly one, at the last iteration.
    assert [osp.basename(p) for p in glob.glob(osp.join(work, '*.pth'))] \
        == ['iter_2.pth']
