#!/usr/bin/env python
"""Train a detector (mmdet config) or segmentor (mmseg config).

One script for both tasks: the task follows the config's ``default_scope``.
It builds mmengine's ``Runner`` from the config, so logging (with ETA),
checkpointing, validation and distributed training are mmengine's own.
``mmtwins`` is imported first, which registers the Twins backbones and the
mmtwins hooks (a config need not list it in ``custom_imports``) and lets
``--resume`` read mmengine checkpoints under torch's safe loading.

``--resume`` without a value resumes from the newest checkpoint in the work
dir that loads and has finite weights (and says which ones it skipped, or
that there is nothing to resume); a checkpoint that does not fit the model,
or whose run had another model, is refused, and changed data, schedule or
optimizer settings are listed (:mod:`tools.cli.resume_checks`). User
errors end in one ``error:`` line and exit status 2 (``--debug``: the
traceback too).

Faults a run survives with one line (docs/en/user_guides/
resume_and_crash_safety.md): a NaN/inf loss stops it before a diverged
model is saved (``--nan-patience``); a second run in the same work dir is
refused (``WORK_DIR/.train.lock``); a full disk during a save names the
file and the intact previous checkpoint; Ctrl-C / SIGTERM say where the
run stopped and how to resume (exit 130 / 143).

Examples::

    python tools/train.py configs/detection/retinanet_twins_pcpvt_s_1x_coco.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume
    python tools/train.py CONFIG --compile   # torch.compile'd train step
    python tools/train.py CONFIG --compile --memory-budget 0.7  # less memory
    python tools/train.py CONFIG --malloc default  # CPU: glibc's own policy
    bash tools/dist_train.sh CONFIG 8   # distributed, see that script
"""
import argparse
import os
import os.path as osp
import sys
from contextlib import ExitStack
from typing import Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a clone without installing

import tools.cli  # noqa: E402,F401  (quiet start: no third-party warnings)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    from tools.cli.errors import add_debug_flag
    parser = argparse.ArgumentParser(
        description='Train an mmdet detector or mmseg segmentor.')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or without a value from the latest '
        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument(
        '--compile', action='store_true',
        help='torch.compile the training step (mmengine\'s `compile` '
        'runner option); the first iterations are slow while it compiles')
    parser.add_argument(
        '--memory-budget', type=float, metavar='B',
        help='with --compile: the compiler\'s activation memory budget in '
        '[0, 1] (mmtwins.utils.activation_memory_budget): compiled '
        'training keeps at most this fraction of its default saved '
        'activations and recomputes the cheapest of the rest; 0.7 halves '
        'the Twins-S training peak against mmseg at about compiled speed')
    # mmtwins.utils.cpu_memory.MALLOC_POLICIES; not imported here, so that
    # parsing arguments does not import the models.
    parser.add_argument(
        '--malloc', choices=('reuse', 'default'), default='reuse',
        help='training on the CPU: reuse (default) makes glibc keep freed '
        'memory for the next step instead of page-faulting fresh memory '
        'every step (mmtwins.utils.cpu_memory; about 20%% of a Twins-S '
        '512x512 step); default keeps glibc\'s policy. No effect on GPUs')
    parser.add_argument(
        '--nan-patience', type=int, metavar='N',
        help='consecutive NaN/inf losses tolerated before training stops '
        '(default 0: the first stops it; mmtwins.FiniteLossHook)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by the actual / base batch size '
        '(needs auto_scale_lr.base_batch_size in the config)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_cfg.max_iters=100 (keys new '
        'to the config are named on stderr)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    # torch.distributed.launch passes --local_rank, torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.nan_patience is not None and args.nan_patience < 0:
        parser.error('--nan-patience must be >= 0')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


# The variable holding the global rank under each launcher (read before
# the process group exists).
RANK_VARIABLES = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID',
                  'mpi': 'OMPI_COMM_WORLD_RANK'}


def lock_work_dir(work_dir: str, launcher: str, held: ExitStack) -> None:
    """Hold ``work_dir`` for this run (rank 0 of a distributed run holds it
    for all ranks)."""
    from mmtwins.engine import WorkDirLock
    if os.environ.get(RANK_VARIABLES.get(launcher, ''), '0') != '0':
        return
    lock = held.enter_context(WorkDirLock(work_dir))
    if lock.took_over:
        print(f'note: took over the lock of {work_dir} from process '
              f'{lock.took_over.get("pid")}, which no longer runs',
              file=sys.stderr)
    if lock.unsupported:
        print(f'warning: cannot lock {work_dir} ({lock.unsupported}): '
              'nothing stops a second run in it', file=sys.stderr)


def check_load_from(load_from: str) -> None:
    """A ``load_from`` checkpoint must load under safe loading and have
    finite weights (mmengine would fail with torch's traceback)."""
    from mmtwins.utils.checkpoint_fit import (
        read_checkpoint,
        require_finite,
        weights_of,
    )
    require_finite(weights_of(read_checkpoint(
        load_from, 'checkpoint (load_from)')), load_from)


def build_train_config(args: argparse.Namespace,
                       held: Optional[ExitStack] = None):
    """The config for ``args``, checked and with the CLI flags applied;
    the work dir is locked into ``held`` for the run's life."""
    import torch

    from mmtwins.utils.checkpoint_fit import read_checkpoint
    from tools.cli.checkpoint_checks import choose_resume_checkpoint
    from tools.cli.config_checks import (
        check_dataset_paths,
        load_config,
        make_work_dir,
        resolve_work_dir,
        task_of,
    )
    from tools.cli.dist_env import setup_distributed
    from tools.cli.errors import ToolError
    from tools.cli.resume_checks import check_resume
    from tools.cli.train_hooks import add_guard_hooks

    cfg = load_config(args.config, args.cfg_options)
    task = task_of(cfg)
    cfg.work_dir = resolve_work_dir(cfg, args.work_dir, args.config)
    make_work_dir(cfg.work_dir)
    if held is not None and '://' not in cfg.work_dir:
        lock_work_dir(cfg.work_dir, args.launcher, held)

    if args.amp:
        if not torch.cuda.is_available():
            raise ToolError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                            'does not run on the CPU')
        wrapper = cfg.optim_wrapper
        if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP is already on in the config', file=sys.stderr)
        else:
            if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
                raise ToolError(f'--amp needs optim_wrapper.type '
                                f'OptimWrapper, not {wrapper.type}')
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
    elif cfg.optim_wrapper.get('type') == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        # e.g. the 3x configs train in fp16 as the official ones did
        print('warning: no GPU, so this run trains in fp32: the config\'s '
              'AmpOptimWrapper becomes an OptimWrapper', file=sys.stderr)
        cfg.optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            cfg.optim_wrapper.pop(key, None)

    if args.compile:
        cfg.compile = True  # mmengine compiles train_step in Runner.train
    if args.memory_budget is not None:
        if not args.compile:
            raise ToolError('--memory-budget applies to compiled training: '
                            'add --compile (or, eager, use the backbone\'s '
                            'with_cp)')
        from mmtwins.utils import check_memory_budget
        try:
            check_memory_budget(args.memory_budget)
        except (TypeError, ValueError) as err:
            raise ToolError(f'--memory-budget: {err}') from None
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr') or {}
        if 'base_batch_size' not in scale:
            raise ToolError('--auto-scale-lr needs auto_scale_lr = '
                            'dict(base_batch_size=...) in the config')
        scale['enable'] = True
        cfg.auto_scale_lr = scale

    add_guard_hooks(cfg, task, args.nan_patience)
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = choose_resume_checkpoint(args.resume, cfg.work_dir)
    elif cfg.get('load_from'):
        check_load_from(cfg.load_from)

    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    check_dataset_paths(cfg, loaders)
    setup_distributed(cfg, args.launcher)
    if args.resume is not None:
        check_resume(cfg, read_checkpoint(cfg.load_from), cfg.load_from,
                     args.config)
    return cfg


def apply_cpu_malloc(policy: str) -> Optional[str]:
    """For training on the CPU with ``--malloc reuse``, make glibc keep
    freed memory (:mod:`mmtwins.utils.cpu_memory`) and return the line that
    says so; None when nothing was changed (a GPU, or ``default``)."""
    import torch
    if policy != 'reuse' or torch.cuda.is_available():
        return None
    from mmtwins.utils.cpu_memory import set_malloc_policy
    return set_malloc_policy(policy)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from tools.cli.dist_env import silent_when_a_peer_died
    from tools.cli.errors import debug_requested, exit_on_user_error
    from tools.cli.interrupts import report_interrupts

    with exit_on_user_error(args.debug) as ctx, \
            silent_when_a_peer_died(debug_requested(args.debug)), \
            report_interrupts(argv, lambda: getattr(ctx.cfg, 'work_dir',
                                                    None)), \
            ExitStack() as held:
        import mmtwins  # noqa: F401  (registers modules, safe checkpoint load)
        from tools.cli.checkpoint_checks import (
            checkpoint_weights,
            require_fit,
        )
        from tools.cli.runner import build_runner

        cfg = ctx.cfg = build_train_config(args, held)
        malloc = apply_cpu_malloc(args.malloc)
        if malloc:
            print(malloc, file=sys.stderr)
        runner = build_runner(cfg)
        if args.resume is not None:
            require_fit(runner.model, checkpoint_weights(cfg.load_from),
                        cfg.load_from, args.config)
        from mmtwins.utils import activation_memory_budget

        # The budget is read when the first compiled step is partitioned,
        # inside runner.train(); it is restored when training ends.
        with activation_memory_budget(args.memory_budget):
            runner.train()


if __name__ == '__main__':
    main()
