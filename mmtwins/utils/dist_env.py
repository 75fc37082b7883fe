"""Distributed set-up that also works on machines without CUDA.

mmengine 0.10.7 initialises a distributed run with ``init_dist``, which
calls ``torch.cuda.set_device`` before creating the process group, wraps
the model in DDP with ``device_ids=[LOCAL_RANK]`` and keeps SyncBN layers:
all three fail without CUDA. With CUDA nothing changes here and mmengine
uses the config's backend (``nccl`` in the OpenMMLab configs). Without
CUDA, :func:`setup_distributed`

* creates the ``gloo`` process group itself (mmengine's Runner then skips
  its own ``init_dist``), taking rank and world size from torchrun
  (``pytorch``), Slurm (``slurm``) or Open MPI (``mpi``) variables;
* wraps the model in DDP without ``device_ids`` (a CPU module);
* swaps ``SyncBN`` for ``BN`` in the model config (torch's SyncBatchNorm
  runs on GPUs only).
"""
from __future__ import annotations

import datetime
import os
import subprocess
from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from .tool_errors import ToolError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _export_rank_env(launcher: str) -> None:
    """Set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for env://."""
    env = os.environ
    if launcher == 'pytorch':
        needed = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
        missing = [k for k in needed if k not in env]
        if missing:
            raise ToolError(
                '--launcher pytorch needs the variables torchrun sets '
                f'({", ".join(missing)} missing); start it with '
                'tools/dist_train.sh or tools/dist_test.sh')
        env.setdefault('LOCAL_RANK', '0')
    elif launcher == 'slurm':
        if 'SLURM_PROCID' not in env:
            raise ToolError('--launcher slurm must run under srun '
                            '(SLURM_PROCID is not set)')
        env['RANK'] = env['SLURM_PROCID']
        env['WORLD_SIZE'] = env['SLURM_NTASKS']
        env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in env:
            env['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {env["SLURM_NODELIST"]} | head -n1')
        env.setdefault('MASTER_PORT', '29500')
    elif launcher == 'mpi':
        if 'OMPI_COMM_WORLD_RANK' not in env:
            raise ToolError('--launcher mpi must run under mpirun '
                            '(OMPI_COMM_WORLD_RANK is not set)')
        env['RANK'] = env['OMPI_COMM_WORLD_RANK']
        env['WORLD_SIZE'] = env['OMPI_COMM_WORLD_SIZE']
        env['LOCAL_RANK'] = env.get('OMPI_COMM_WORLD_LOCAL_RANK', '0')
        env.setdefault('MASTER_ADDR', '127.0.0.1')
        env.setdefault('MASTER_PORT', '29500')


def _sync_bn_to_bn(node: Any) -> None:
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _sync_bn_to_bn(value)


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Prepare ``cfg`` (and, on CPU, the process group) for ``launcher``.

    Args:
        cfg (Config): the run's config; edited in place.
        launcher (str): one of ``none``, ``pytorch``, ``slurm``, ``mpi``.
    """
    if launcher not in LAUNCHERS:
        raise ToolError(f'unknown launcher {launcher!r}; use one of '
                        f'{", ".join(LAUNCHERS)}')
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    _export_rank_env(launcher)
    if not torch_dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(
                seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    _sync_bn_to_bn(cfg.model)
