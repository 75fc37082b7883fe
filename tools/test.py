#!/usr/bin/env python
"""Evaluate a checkpoint and write an evaluation report.

One script for detection (mmdet config) and segmentation (mmseg config):
the task follows the config's ``default_scope``. The test itself is
mmengine's ``Runner.test()`` with the config's evaluator (COCO metric,
IoU metric). Afterwards the main process writes ``metrics.json`` and a
readable ``report.md`` into the work dir (see
:mod:`tools.cli.eval_report`); segmentation reports carry per-class
IoU and accuracy.

The checkpoint must fit the model key for key and shape for shape and
hold finite weights (a checkpoint of a diverged run is refused, as is an
evaluation that returns no metric at all); a checkpoint of another model
is refused with the counts and the first
missing, unexpected and mis-shaped keys (``--allow-partial-load`` loads the
keys that fit, on purpose). User errors end in one ``error:`` line and exit
status 2 (``--debug``: traceback).

Examples::

    python tools/test.py CONFIG CKPT --work-dir work_dirs/eval
    python tools/test.py CONFIG CKPT --show-dir vis --tta
    python tools/test.py CONFIG MODEL.onnx  # onnxruntime (mmtwins.deploy)
    bash tools/dist_test.sh CONFIG CKPT 8
"""
import argparse
import copy
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a clone without installing

import tools.cli  # noqa: E402,F401  (quiet start: no third-party warnings)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    from tools.cli.errors import add_debug_flag
    parser = argparse.ArgumentParser(
        description='Test an mmdet detector or mmseg segmentor and write '
        'metrics.json and report.md into the work dir.')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (path or URL), '
                        'or an end-to-end .onnx file exported from CONFIG')
    parser.add_argument('--work-dir',
                        help='where the logs and the report go')
    parser.add_argument(
        '--out',
        help='detection: dump the raw predictions to this .pkl file; '
        'segmentation: save the predicted label maps (PNG) in this folder')
    parser.add_argument('--show', action='store_true',
                        help='show the predictions in a window')
    parser.add_argument('--show-dir',
                        help='save pictures of the predictions here')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each picture is shown with --show')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (flip; the config\'s '
                        'tta_model / tta_pipeline when it has them)')
    parser.add_argument(
        '--allow-partial-load', action='store_true',
        help='evaluate a checkpoint whose keys do not all fit the model '
        '(warns instead of refusing it)')
    parser.add_argument(
        '--compile', action='store_true',
        help='torch.compile the backbone and neck (the first batches are '
        'slow while it compiles)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. test_dataloader.batch_size=2 (keys '
        'new to the config are named on stderr)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _innermost_dataset(loader_cfg):
    ds = loader_cfg.dataset
    while 'dataset' in ds:
        ds = ds.dataset
    return ds


def _enable_visualization(cfg, args, task: str) -> None:
    """Turn on the config's visualization hook as mmdet's / mmseg's test
    tools do (mmdet's wiring is imported; mmseg keeps its in its tool)."""
    from tools.cli.errors import ToolError
    if 'visualization' not in cfg.get('default_hooks', {}):
        raise ToolError('--show/--show-dir need a `visualization` entry in '
                        'default_hooks (mmdet/mmseg default_runtime has one)')
    if args.show_dir:
        args.show_dir = osp.abspath(args.show_dir)
    if task == 'detection':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        trigger_visualization_hook(cfg, args)  # DetVisualizationHook
        return
    hook = cfg.default_hooks['visualization']  # SegVisualizationHook
    hook['draw'] = True
    hook['interval'] = 1  # mmseg's hook draws every 50th batch only
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir  # SegLocalVisualizer


def _enable_tta(cfg, task: str) -> None:
    from mmengine.config import ConfigDict

    from tools.cli.errors import ToolError
    if task == 'detection':
        cfg.setdefault(
            'tta_model',
            dict(type='DetTTAModel',
                 tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                              max_per_img=100)))
        if 'tta_pipeline' not in cfg:
            pipeline = copy.deepcopy(
                _innermost_dataset(cfg.test_dataloader).pipeline)
            pack = pipeline[-1]
            pipeline[-1] = dict(
                type='TestTimeAug',
                transforms=[[dict(type='RandomFlip', prob=1.),
                             dict(type='RandomFlip', prob=0.)], [pack]])
            cfg.tta_pipeline = pipeline
    for key in ('tta_model', 'tta_pipeline'):
        if key not in cfg:
            raise ToolError(f'--tta needs `{key}` in the config (mmseg '
                            'dataset/runtime bases define it)')
    _innermost_dataset(cfg.test_dataloader).pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)


def _add_output(cfg, out: str, task: str) -> None:
    """mmdet's ``DumpDetResults`` metric, or mmseg's IoUMetric writing the
    label maps (as their test tools do)."""
    from tools.cli.errors import ToolError
    if task == 'detection':
        if not out.endswith(('.pkl', '.pickle')):
            raise ToolError(f'--out must name a .pkl file, got {out}')
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, dict):
            evaluators = [evaluators]
        cfg.test_evaluator = [
            *evaluators, dict(type='DumpDetResults', out_file_path=out)
        ]
    else:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True


def build_test_config(args: argparse.Namespace):
    """The config for ``args``, checked and with the CLI flags applied."""
    from tools.cli.config_checks import (
        check_dataset_paths,
        check_file,
        load_config,
        make_work_dir,
        resolve_work_dir,
        task_of,
    )
    from tools.cli.dist_env import setup_distributed

    cfg = load_config(args.config, args.cfg_options)
    task = task_of(cfg)
    check_file(args.checkpoint, 'checkpoint file')
    cfg.work_dir = resolve_work_dir(cfg, args.work_dir, args.config)
    make_work_dir(cfg.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        _enable_visualization(cfg, args, task)
    if task == 'segmentation' and isinstance(cfg.test_evaluator, dict) \
            and cfg.test_evaluator.get('type') == 'IoUMetric':
        import mmtwins.utils.seg_metrics  # noqa: F401  (registers it)
        cfg.test_evaluator['type'] = 'mmtwins.ClasswiseIoUMetric'
    if args.out:
        _add_output(cfg, args.out, task)
    if args.tta:
        _enable_tta(cfg, task)
    check_dataset_paths(cfg, ['test_dataloader'])
    setup_distributed(cfg, args.launcher)
    return cfg, task


def compile_for_test(model) -> None:
    """``torch.compile`` the backbone and neck of ``model`` in place.

    mmengine compiles only ``train_step``, so testing would run eager. The
    feature extractor is compiled module by module (``nn.Module.compile``,
    which keeps the state-dict keys, so ``load_from`` still matches); the
    heads' post-processing (NMS, resizing to the original image) has
    data-dependent control flow and stays eager.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    if hasattr(model, 'module'):  # test-time augmentation wrapper
        model = model.module
    for name in ('backbone', 'neck'):
        part = getattr(model, name, None)
        if part is not None:
            part.compile()


def require_metrics(metrics, checkpoint: str, task: str) -> None:
    """An evaluation without a single finite metric is an error, not a
    report of zeros (a diverged or untrained model)."""
    import math

    from tools.cli.errors import ToolError
    for value in (metrics or {}).values():
        try:
            if not isinstance(value, str) and math.isfinite(float(value)):
                return
        except (TypeError, ValueError):
            continue
    why = ('no box scored above model.test_cfg.score_thr'
           if task == 'detection' else 'every metric is NaN')
    raise ToolError(f'the evaluator returned no metrics for {checkpoint} '
                    f'({why}): the model is untrained or broken; no report '
                    'was written')


def main(argv=None) -> None:
    args = parse_args(argv)
    from tools.cli.errors import exit_on_user_error

    with exit_on_user_error(args.debug) as ctx:
        from mmengine.dist import is_main_process

        import mmtwins  # noqa: F401  (registers modules, safe checkpoint load)
        from tools.cli.checkpoint_checks import (
            checkpoint_weights,
            require_fit,
        )
        from tools.cli.eval_report import build_report, write_eval_report
        from tools.cli.runner import build_runner

        cfg, task = build_test_config(args)
        ctx.cfg = cfg
        from tools.cli.onnx_eval import is_onnx, use_onnx_model
        if is_onnx(args.checkpoint):  # onnxruntime runs the exported file
            use_onnx_model(cfg, args)
        weights = None if is_onnx(args.checkpoint) else \
            checkpoint_weights(args.checkpoint)
        runner = build_runner(cfg)
        if weights is not None:
            require_fit(runner.model, weights, args.checkpoint, args.config,
                        allow_partial=args.allow_partial_load,
                        partial_flag='--allow-partial-load')
        del weights
        if args.compile:
            compile_for_test(runner.model)
        metrics = runner.test()
        require_metrics(metrics, args.checkpoint, task)
    if is_main_process():
        ds_cfg = _innermost_dataset(cfg.test_dataloader)
        dataset = dict(type=str(ds_cfg.get('type')),
                       data_root=ds_cfg.get('data_root', ''),
                       num_images=len(runner.test_loop.dataloader.dataset))
        report = build_report(metrics, task, args.config, args.checkpoint,
                              dataset, tta=args.tta)
        paths = write_eval_report(cfg.work_dir, report)
        runner.logger.info('evaluation report: ' + ', '.join(paths))


if __name__ == '__main__':
    main()
