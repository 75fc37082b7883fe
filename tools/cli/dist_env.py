"""Distributed set-up that also works on machines without CUDA.

With CUDA nothing happens here: mmengine's Runner initialises the process
group itself (``init_dist`` with the config's backend, ``nccl`` in the
OpenMMLab configs). Without CUDA, mmengine 0.10.7's set-up fails in three
places, and :func:`setup_distributed` works around each:

* ``init_dist`` calls ``torch.cuda.set_device`` before creating the process
  group: the tool calls mmengine's own ``init_dist`` (which reads the
  torchrun, Slurm or Open MPI variables) with the ``gloo`` backend while
  ``torch.cuda.set_device`` is a no-op; the Runner then skips its own;
* the model is wrapped in DDP with ``device_ids=[LOCAL_RANK]``: the wrapper
  config gets ``device_ids=None`` (a CPU module);
* ``SyncBN`` layers run on GPUs only: they become ``BN``.

When one rank of a ``torchrun`` job dies, the others fail in their next
collective with a communication error and a long traceback each;
:func:`silent_when_a_peer_died` ends them with status 1 and no output, so
that the launcher's one line (:mod:`tools.cli.torchrun`), which names the
rank that failed first, is what the user reads (``--debug`` shows them).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from mmengine.config import Config

from .errors import ToolError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# The variable each launcher sets in every process it starts.
_LAUNCHER_ENV = {
    'pytorch': ('RANK', 'start it with tools/dist_train.sh or '
                'tools/dist_test.sh (torchrun)'),
    'slurm': ('SLURM_PROCID', 'run it under srun (tools/slurm_train.sh)'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'run it under mpirun'),
}


@contextmanager
def _cuda_set_device_is_a_no_op() -> Iterator[None]:
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


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
    if launcher == 'none':
        return
    variable, how = _LAUNCHER_ENV[launcher]
    if variable not in os.environ:
        raise ToolError(f'--launcher {launcher} needs the variables its '
                        f'launcher sets ({variable} is not set); {how}')
    if torch.cuda.is_available():
        return
    from mmengine.dist import init_dist, is_distributed
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not is_distributed():
        with _cuda_set_device_is_a_no_op():
            init_dist(launcher, **dist_cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    _sync_bn_to_bn(cfg.model)


_PEER_GONE = ('Connection closed by peer', 'Connection reset by peer',
              'Broken pipe', 'NCCL communicator was aborted')


def lost_a_peer(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) is a collective that
    failed because another process went away."""
    from .errors import chain
    for err in chain(exc):
        name = type(err).__name__
        if name in ('DistBackendError', 'DistNetworkError') or \
                isinstance(err, RuntimeError):
            if any(text in str(err) for text in _PEER_GONE):
                return True
    return False


@contextmanager
def silent_when_a_peer_died(debug: bool = False) -> Iterator[None]:
    """Under torchrun, exit 1 quietly when a collective lost its peers."""
    try:
        yield
    except Exception as exc:
        if debug or 'TORCHELASTIC_RUN_ID' not in os.environ or \
                not lost_a_peer(exc):
            raise
        sys.exit(1)
