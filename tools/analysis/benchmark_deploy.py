"""Per-image latency of a model end to end: onnxruntime fp32, PyTorch
eager, PyTorch compiled and onnxruntime int8, with the test metric beside.

``python tools/analysis/benchmark_deploy.py CONFIG [CHECKPOINT]`` exports
the config's model end to end (``mmtwins.deploy``), quantises the file to
int8 with onnxruntime's static quantisation
(:func:`mmtwins.deploy.quantize.quantize_int8`: QDQ, per-channel weights,
attention products in fp32, calibrated on ``--calib`` training images
through the test pipeline) and
times, at batch 1 on one input of ``--shape`` (default: the test
pipeline's resize scale):

* ``onnxruntime fp32`` and ``onnxruntime int8``: ``session.run`` on the
  pixel batch, everything from normalisation to NMS inside; for a model
  with SASA layers these files hold SASA's fused kernel as mmtwins'
  onnxruntime operator (``pytorch2onnx.py --sasa-kernel``), and
  ``onnxruntime fp32, standard ops`` times the file of standard ONNX
  operators beside them;
* ``PyTorch eager``: the model's ``test_step`` (mmdet/mmseg data
  preprocessor, forward and post-processing, as ``tools/test.py``);
* ``PyTorch compiled``: the same with backbone and neck compiled by
  ``torch.compile`` (as ``tools/test.py --compile``); the first call
  compiles and is not timed.

Every repeat runs each backend once, in turn (A B C D A B ...), so
machine noise hits all alike, with an untimed 0.1 s pause before each run
so that no backend's idle threads still spin during the next one's; the
table gives the median time of ``--repeats`` runs and the median of the
per-repeat ratios to PyTorch eager. ``--eval`` adds the test set's bbox
mAP or mIoU of each backend (``mmengine`` runner, the config's
evaluator). onnxruntime and PyTorch get the same number of threads
(``--threads``, default PyTorch's). ``--profile N`` adds, for each
onnxruntime file, the N operator types that take the most time in
onnxruntime's profiler: where int8 gains and where it does not.

Example::

    python tools/analysis/benchmark_deploy.py \\
        configs/quickstart/retinanet_twins_pcpvt_s_mini_coco.py --eval
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from tools.cli.errors import add_debug_flag, exit_on_user_error  # noqa

# Untimed pause before every timed run: onnxruntime's pool threads (and
# OpenMP's, unless OMP_WAIT_POLICY=PASSIVE) spin for a while after a run.
# Without the pause the previous backend's spinning threads compete with the
# next backend's run; on 2 cores that made a Semantic FPN at 128x128 take
# 64 ms in onnxruntime fp32 instead of 35 ms.
SETTLE_S = 0.1

STANDARD = 'onnxruntime fp32, standard ops'
BACKENDS = ('onnxruntime fp32', STANDARD, 'PyTorch eager',
            'PyTorch compiled', 'onnxruntime int8')


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?',
                        help='weights (default: random initialisation)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--calib', type=int, default=32,
                        help='training images to calibrate int8 on')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--eval', action='store_true',
                        help='also the test metric of every backend')
    parser.add_argument('--no-compile', action='store_true',
                        help='leave out PyTorch compiled')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='also the N operator types that take the most '
                        'time in each onnxruntime file (its profiler, 3 '
                        'runs)')
    parser.add_argument('--work-dir', default=None,
                        help='where the .onnx files go (default: a '
                        'temporary folder)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.calib < 1 or args.profile < 0:
        parser.error('--repeats and --calib must be at least 1, --profile '
                     'at least 0')
    return args


def session(path: str, threads: int):
    from mmtwins.deploy.runtime import create_session
    return create_session(path, threads)


def operator_profile(path: str, threads: int, feed: Dict,
                     runs: int = 3) -> List[Tuple[str, float, float]]:
    """(operator type, ms per run, share of the kernel time) of the ONNX
    file ``path`` from onnxruntime's profiler over ``runs`` runs (after
    one untimed), most time first."""
    import json

    import onnxruntime as ort

    from mmtwins.deploy.runtime import create_session
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = osp.join(
        tempfile.mkdtemp(prefix='ort_profile_'), 'run')
    sess = create_session(path, threads, options)
    for _ in range(runs + 1):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per_op: Dict[str, float] = collections.Counter()
    for event in events:
        if event.get('cat') == 'Node' and \
                event['name'].endswith('_kernel_time'):
            per_op[event['args']['op_name']] += event['dur']
    total = sum(per_op.values()) or 1.0
    # The first run is in the profile too: the ms are over runs + 1.
    return [(op, us / 1000 / (runs + 1), us / total)
            for op, us in per_op.most_common()]


def evaluate(cfg, model_cfg: Optional[dict], checkpoint: Optional[str],
             work_dir: str) -> str:
    """The test set's metric (percent): bbox mAP, "bbox / mask" mAP for
    instance segmentation, or mIoU."""
    from mmengine.runner import Runner
    run_cfg = copy.deepcopy(cfg)
    run_cfg.work_dir = work_dir
    run_cfg.load_from = None if model_cfg else checkpoint
    if model_cfg:
        run_cfg.model = model_cfg
    run_cfg.test_dataloader.num_workers = 0
    run_cfg.test_dataloader.persistent_workers = False
    run_cfg.log_level = 'WARNING'
    metrics = Runner.from_cfg(run_cfg).test()
    if 'mIoU' in metrics:
        return f'{float(metrics["mIoU"]):.1f}'
    found = [100 * float(metrics[key]) for key in
             ('coco/bbox_mAP', 'coco/segm_mAP') if key in metrics]
    return ' / '.join(f'{v:.1f}' for v in found) or 'n/a'


def main(argv=None) -> None:
    args = parse_args(argv)
    with exit_on_user_error(args.debug) as ctx:
        import torch

        import mmtwins.deploy  # noqa: F401
        from mmtwins.deploy import export_end_to_end
        from mmtwins.deploy.export import has_sasa_attention
        from mmtwins.deploy.preprocess import pad_batch, preprocess_params
        from mmtwins.deploy.quantize import (
            calibration_batches,
            describe,
            quantize_int8,
        )
        from tools.analysis.bench_utils import machine
        from tools.cli.config_checks import load_config
        from tools.cli.onnx_export import _classes, default_shape
        from tools.deployment.pytorch2onnx import build_model

        cfg = load_config(args.config, args.cfg_options)
        ctx.cfg = cfg
        threads = args.threads or torch.get_num_threads()
        torch.set_num_threads(threads)
        model_cfg = copy.deepcopy(cfg.model)  # building adds keys to it
        model = build_model(cfg, args.checkpoint)
        size = list(args.shape or default_shape(cfg))
        work = args.work_dir or tempfile.mkdtemp(prefix='deploy_bench_')
        os.makedirs(work, exist_ok=True)
        stem = osp.splitext(osp.basename(args.config))[0]
        fp32 = osp.join(work, f'{stem}.onnx')
        int8 = osp.join(work, f'{stem}_int8.onnx')
        # SASA models: the onnxruntime files hold SASA's fused kernel as
        # mmtwins' onnxruntime operator; the file of standard operators
        # (what --sasa-kernel is not given for) is timed beside them.
        has_sasa = has_sasa_attention(model)
        files = {'onnxruntime fp32': fp32}
        if has_sasa:
            files[STANDARD] = osp.join(work, f'{stem}_standard_ops.onnx')
        for name, path in files.items():
            export_end_to_end(model, path, tuple(size),
                              config=osp.basename(args.config),
                              model_cfg=model_cfg, classes=_classes(cfg),
                              sasa_kernel=has_sasa and name != STANDARD)
        files['onnxruntime int8'] = int8
        params = preprocess_params(model.data_preprocessor)
        calib = calibration_batches(cfg, params, args.calib)
        counts = quantize_int8(fp32, int8, calib)

        image = (torch.rand(3, *size) * 255).to(torch.uint8)
        batch, _ = pad_batch([image], params)
        h, w = size
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1., 1.))
        if hasattr(model, 'decode_head') and not hasattr(model, 'bbox_head'):
            from mmseg.structures import SegDataSample as Sample
        else:
            from mmdet.structures import DetDataSample as Sample
        data = dict(inputs=[image], data_samples=[Sample(metainfo=meta)])
        eager = model
        runs: Dict[str, Callable[[], object]] = {}
        sessions = {name: session(path, threads)
                    for name, path in files.items()}
        for name, sess in sessions.items():
            runs[name] = (lambda s=sess: s.run(None, {'images': batch}))
        with torch.no_grad():
            runs['PyTorch eager'] = lambda: eager.test_step(
                copy.deepcopy(data))
            if not args.no_compile:
                # Compile in this process: inductor's pool of compile worker
                # processes would otherwise stay alive beside the timed
                # runs, and with it onnxruntime ran a SASA Semantic FPN at
                # 128x128 in 120 ms instead of 60 ms on 2 cores.
                import torch._inductor.config as inductor_config
                inductor_config.compile_threads = 1
                compiled = copy.deepcopy(model)
                for part in ('backbone', 'neck'):
                    if getattr(compiled, part, None) is not None:
                        getattr(compiled, part).compile()
                start = time.perf_counter()
                compiled.test_step(copy.deepcopy(data))
                compile_s = time.perf_counter() - start
                runs['PyTorch compiled'] = lambda: compiled.test_step(
                    copy.deepcopy(data))
            for fn in runs.values():  # warm-up
                fn()
            times: Dict[str, List[float]] = {k: [] for k in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    time.sleep(SETTLE_S)
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        scores: Dict[str, str] = {}
        if args.eval:
            onnx_cfg = dict(
                type='mmtwins.ONNXRuntimeModel', num_threads=threads,
                data_preprocessor=dict(type='mmengine.BaseDataPreprocessor'))
            for name, path in files.items():
                scores[name] = evaluate(
                    cfg, dict(onnx_cfg, onnx_file=path), None,
                    osp.join(work, 'eval_' + osp.basename(path)[:-5]))
            scores['PyTorch eager'] = evaluate(
                cfg, None, args.checkpoint, osp.join(work, 'eval_eager'))
            if 'PyTorch compiled' in runs:
                scores['PyTorch compiled'] = scores['PyTorch eager']
        metric = 'mIoU' if 'Seg' in type(data['data_samples'][0]).__name__ \
            else 'bbox / mask mAP' if 'masks' in [
                o.name for o in sessions['onnxruntime fp32'].get_outputs()] \
            else 'bbox mAP'
        print(f'# {type(model).__name__} ({osp.basename(args.config)}), '
              f'{"random weights" if not args.checkpoint else "checkpoint"}'
              f', batch 1 at {h}x{w}, median of {args.repeats} runs')
        print(f'# machine: {machine(torch.device("cpu"))}; onnxruntime '
              f'threads {threads}')
        if not args.no_compile:
            print(f'# PyTorch compiled: first call (compiling) '
                  f'{compile_s:.0f} s')
        print(f'| backend | ms/image | speed vs PyTorch eager | {metric} |')
        print('|---|---|---|---|')
        base = times['PyTorch eager']
        for name in BACKENDS:
            if name not in times:
                continue
            ratio = statistics.median(b / t for b, t in
                                      zip(base, times[name]))
            score = scores.get(name, '-')
            print(f'| {name} | {1000 * statistics.median(times[name]):.1f} '
                  f'| {ratio:.2f}x | {score} |')
        t32, t8 = times['onnxruntime fp32'], times['onnxruntime int8']
        print(f'# onnxruntime int8 vs fp32: '
              f'{statistics.median(a / b for a, b in zip(t32, t8)):.2f}x'
              f' ({describe(counts)})')
        if 'PyTorch compiled' in scores:
            print('# PyTorch compiled runs the eager model\'s weights and '
                  'post-processing: its metric is the eager one')
        if has_sasa:
            print('# onnxruntime fp32/int8: SASA as mmtwins\' onnxruntime '
                  'operator (pytorch2onnx.py --sasa-kernel); standard ops: '
                  'the file without it')
        if args.profile:
            for name, path in files.items():
                print(f'# {name}: the {args.profile} operator types that '
                      'take the most time (onnxruntime profiler)')
                print('| operator | ms/image | share |')
                print('|---|---|---|')
                for op, ms, share in operator_profile(
                        path, threads, {'images': batch})[:args.profile]:
                    print(f'| {op} | {ms:.1f} | {100 * share:.1f}% |')


if __name__ == '__main__':
    main()
