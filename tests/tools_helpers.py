"""Helpers for the tests that drive the real command-line tools: tiny mini
datasets, small derived configs and subprocess runs from the repo root."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CFG = osp.join(REPO, 'configs', 'quickstart',
                   'retinanet_twins_pcpvt_s_mini_coco.py')
SEG_CFG = osp.join(REPO, 'configs', 'quickstart',
                   'fpn_twins_pcpvt_s_mini_ade.py')


def load_tool(relpath: str):
    """Import a script under ``tools/`` as a module (for in-process runs)."""
    path = osp.join(REPO, 'tools', relpath)
    name = 'tool_' + relpath.replace('/', '_')[:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_mini(out_dir: str, num_train: int = 4, num_val: int = 2) -> str:
    """Write tiny mini datasets (128 px, the quickstart scale)."""
    load_tool('dataset_converters/make_mini_datasets.py').main(
        [out_dir, '--num-train', str(num_train), '--num-val', str(num_val)])
    return out_dir


def _loader(data_root: str, batch_size: int) -> str:
    return (f'dict(batch_size={batch_size}, num_workers=0, '
            f'persistent_workers=False, dataset=dict(data_root={data_root!r}'
            '))')


def write_config(path: str, task: str, data_dir: str, extra: str = '',
                 batch_size: int = 2, base: Optional[str] = None) -> str:
    """A config inheriting a quickstart config (the Twins one of ``task``,
    or ``base``), on ``data_dir`` with tiny batches, no worker processes
    and a few-iteration schedule."""
    if task == 'detection':
        root = osp.join(data_dir, 'coco') + '/'
        ann = root + 'annotations/instances_val2017.json'
        body = f"""_base_ = {base or DET_CFG!r}
train_dataloader = {_loader(root, batch_size)}
val_dataloader = {_loader(root, batch_size)}
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
# A few iterations score nothing above 0.05; keep every box for the metric.
model = dict(test_cfg=dict(score_thr=0.0))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
"""
    else:
        root = osp.join(data_dir, 'ade', 'ADEChallengeData2016')
        body = f"""_base_ = {base or SEG_CFG!r}
train_dataloader = {_loader(root, batch_size)}
val_dataloader = {_loader(root, batch_size)}
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""
    with open(path, 'w') as f:
        f.write(body + extra)
    return path


def run_tool(args: List[str], env: Optional[Dict[str, str]] = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python tools/...`` (or ``bash tools/...sh``) from the repo."""
    cmd = ['bash', *args] if args[0].endswith('.sh') else \
        [sys.executable, *args]
    # Sleeping (not spinning) OpenMP threads: much faster on a shared CPU.
    full_env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE', **(env or {}))
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
