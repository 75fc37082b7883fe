"""``tools/deployment/pytorch2onnx.py``'s end-to-end mode: export the whole
model with :func:`mmtwins.deploy.export_end_to_end` and check the file
against the PyTorch model's own ``predict`` at three sizes and a batch of
2 (:mod:`mmtwins.deploy.parity`)."""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import List, Optional, Tuple

from tools.cli.errors import ToolError


def default_shape(cfg) -> List[int]:
    """(H, W) of the test pipeline's ``Resize`` scale (mmdet/mmseg give
    it as (w, h)), rounded up to 32; 512x512 without one."""
    pipeline = []
    loader = cfg.get('test_dataloader') or {}
    ds = loader.get('dataset') or {}
    while 'dataset' in ds:
        ds = ds['dataset']
    pipeline = ds.get('pipeline') or []
    for step in pipeline:
        scale = step.get('scale') if isinstance(step, dict) else None
        if step.get('type') == 'Resize' and scale is not None:
            if isinstance(scale, int):
                scale = (scale, scale)
            w, h = scale
            return [-(-int(h) // 32) * 32, -(-int(w) // 32) * 32]
    return [512, 512]


def _classes(cfg) -> Tuple[str, ...]:
    ds = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    while 'dataset' in ds:
        ds = ds['dataset']
    classes = (ds.get('metainfo') or {}).get('classes')
    if classes:
        return tuple(classes)
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope'))
    cls = DATASETS.get(ds.get('type'))
    return tuple(getattr(cls, 'METAINFO', {}).get('classes', ()))


def export_end_to_end_cli(args, cfg, model, model_cfg) -> int:
    """Export, check, print one line per check; the exit status.
    ``model_cfg``: ``cfg.model`` as loaded, before the model was built."""
    import numpy as np
    import torch

    from mmtwins.deploy import UnsupportedModel, export_end_to_end
    from mmtwins.deploy.parity import check_file, sizes_to_check
    from mmtwins.deploy.runtime import create_session

    size = list(args.shape or default_shape(cfg))
    stem = osp.splitext(osp.basename(args.config))[0]
    path = args.out or osp.join(args.out_dir, f'{stem}.onnx')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    start = time.perf_counter()
    try:
        meta = export_end_to_end(
            model, path, tuple(size), config=osp.basename(args.config),
            model_cfg=model_cfg, classes=_classes(cfg),
            min_size=max(args.min_size, 64), sasa_kernel=args.sasa_kernel)
    except UnsupportedModel as exc:
        raise ToolError(f'{args.config}: {exc}') from None
    took = time.perf_counter() - start
    mb = sum(os.path.getsize(p) for p in (path, path + '.data')
             if osp.isfile(p)) / 2**20
    print(f'{type(model).__name__} end to end: exported to {path} '
          f'({mb:.1f} MiB, outputs {meta["mmtwins.outputs"]}, dynamic N, '
          f'H, W >= {max(args.min_size, 64)}, {took:.0f} s)')
    line = _sasa_line(model, path, args.sasa_kernel)
    if line:
        print(line)
    session = create_session(path)
    names = [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray):
        return dict(zip(names, session.run(None, {'images': batch})))

    checks = [(1, size), (2, size)] + [
        (1, list(s)) for s in (args.check_shape or sizes_to_check(size))]
    torch.manual_seed(0)
    ok = True
    for batch, (h, w) in checks:
        images = torch.rand(batch, 3, h, w) * 255
        agree = check_file(model, run, images)
        unit = 'pixels' if 'seg' in names else 'detections'
        verdict = 'ok' if agree.exact else 'DIFFERENT'
        iou = '' if unit == 'pixels' else \
            f', lowest IoU {agree.lowest_iou:.4f}'
        print(f'  batch {batch} at {h}x{w}: {agree.matched}/'
              f'{agree.reference} {unit} agree, {agree.extra} '
              f'{"differ" if unit == "pixels" else "extra"}{iou}: {verdict}')
        ok = ok and agree.exact
    if args.int8:
        quantize_cli(args, cfg, model, path, size)
    return 0 if ok else 1


def _sasa_line(model, path: str, asked: bool) -> Optional[str]:
    """How the file holds the model's SASA attention (None: the model has
    none and --sasa-kernel was not given)."""
    import onnx

    from mmtwins.deploy.export import has_sasa_attention
    from mmtwins.ops import sasa_ort
    if not has_sasa_attention(model):
        return ('  --sasa-kernel: the model has no SASA attention; the file '
                'has standard operators only' if asked else None)
    if not asked:
        return ('  SASA attention: standard ONNX operators (any runtime); '
                '--sasa-kernel writes it as mmtwins\' onnxruntime operator, '
                'several times faster in onnxruntime')
    graph = onnx.load(path, load_external_data=False).graph
    nodes = sum(n.domain == sasa_ort.DOMAIN for n in graph.node)
    return (f'  SASA attention: {nodes} {sasa_ort.DOMAIN}.{sasa_ort.OP_TYPE} '
            'nodes, onnxruntime custom operator in '
            f'{sasa_ort.library()} (mmtwins\' tools register it)')


def quantize_cli(args, cfg, model, path: str, size: List[int]) -> None:
    """``--int8``: quantise ``path``, print what was written and how far
    the int8 file agrees with PyTorch at the export size."""
    import torch

    from mmtwins.deploy.parity import check_file
    from mmtwins.deploy.preprocess import preprocess_params
    from mmtwins.deploy.quantize import (
        calibration_batches,
        describe,
        quantize_int8,
    )
    from mmtwins.deploy.runtime import create_session

    int8 = osp.splitext(path)[0] + '_int8.onnx'
    start = time.perf_counter()
    batches = calibration_batches(
        cfg, preprocess_params(model.data_preprocessor), args.calib)
    counts = quantize_int8(path, int8, batches)
    print(f'int8: quantised to {int8} ({describe(counts)}; calibrated on '
          f'{len(batches)} training images, '
          f'{time.perf_counter() - start:.0f} s)')
    session = create_session(int8)
    names = [o.name for o in session.get_outputs()]
    torch.manual_seed(0)
    agree = check_file(
        model, lambda b: dict(zip(names, session.run(None, {'images': b}))),
        torch.rand(1, 3, *size) * 255)
    unit = 'pixels' if 'seg' in names else 'detections'
    print(f'  int8 at {size[0]}x{size[1]}: {agree.matched}/'
          f'{agree.reference} {unit} as PyTorch (int8 is not exact; '
          'evaluate it with tools/test.py CONFIG FILE)')
