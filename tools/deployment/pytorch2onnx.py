#!/usr/bin/env python
"""Export a config's model to ONNX end to end and check it against PyTorch.

Usage::

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT]
        [--shape H W] [--out FILE] [--sasa-kernel] [--int8 [--calib N]]
        [--cfg-options KEY=VALUE ...]
    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT]
        --backbone-only | --tensor-forward  [--dynamic] [--check-shape H W]

By default the whole model is exported (see :mod:`mmtwins.deploy`): the
input is a batch of pixel images (N, 3, H, W) in the test pipeline's
channel order, with N, H and W dynamic; normalisation and the test-time
post-processing are in the graph. Detectors give ``dets`` (N, K, 5) and
``labels`` (N, K) (padded rows: score 0, label -1; Mask R-CNN also
``masks``), segmentors ``seg`` (N, H, W). The file's metadata records the
config's model fingerprint, task and class names, so ``tools/test.py`` and
``tools/infer.py`` refuse it with another config. The file is then run with
onnxruntime and compared with the PyTorch model's own ``predict`` at the
export size (default: the test pipeline's resize scale), at two other
sizes and for a batch of 2: one line per check with the detections matched
(same label, IoU >= 0.99) or the pixels that agree. With ``--int8`` the
file is also quantised to ``<file>_int8.onnx``
(:func:`mmtwins.deploy.quantize.quantize_int8`, calibrated on the first
``--calib`` training images through the test pipeline); one more line
says how far its predictions agree with PyTorch's at the export size
(informative: int8 is not exact, and that line does not change the exit
status). SASA layers are written with standard ONNX operators, which any
runtime runs; ``--sasa-kernel`` writes each as one
``mmtwins.SASAttention`` node instead, SASA's fused kernel as an
onnxruntime custom operator (:mod:`mmtwins.ops.sasa_ort`), several times
faster in onnxruntime; mmtwins' tools register its library themselves.

``--backbone-only`` exports ``model.backbone`` only; ``--tensor-forward``
the backbone and then the model's ``tensor`` forward (raw head maps, no
pre- or post-processing). Both use a random ``1x3xHxW`` input and print the
largest difference against PyTorch for every output. With ``--dynamic``
the height and width are symbolic: the same file is checked at the export
size and at every ``--check-shape`` (default: one more size, 96x160 pixels
larger, where Twins' LSA windows pad differently). Where the traced graph
only holds above some size (e.g. Twins-SVT needs at least two 7x7 windows
per side in its last stage, 256 pixels), the exporter says so and the
range is narrowed to that size, which is printed.

Exit status: 0 when every check passes; 1 when one does not; 2 with one
``error:`` line when the model cannot be exported.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import re
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a clone without installing

from tools.cli.errors import add_debug_flag  # noqa: E402

if TYPE_CHECKING:
    import torch

MAX_SIZE = 4096
_SUGGESTED_MIN = re.compile(r"Dim\('(height|width)', min=(\d+)")


class Unexportable(Exception):
    """The exporter failed; the message is one line."""


def _one_line(exc: BaseException) -> str:
    """The first informative line of an exception message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return f'{type(exc).__name__}: {text}'[:300]


def build_model(cfg, checkpoint: Optional[str]) -> torch.nn.Module:
    """``cfg.model`` in eval mode on the CPU, under the config's scope."""
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import load_checkpoint

    from mmtwins.utils.checkpoint_fit import read_checkpoint

    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', None) or 'mmengine'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
    if checkpoint is not None:
        # the safe loader's one-line refusal of a file it will not unpickle
        read_checkpoint(checkpoint)
        load_checkpoint(model, checkpoint, map_location='cpu')
    return revert_sync_batchnorm(model).eval()


def tensor_forward(model: torch.nn.Module) -> torch.nn.Module:
    """A module whose one tensor argument (a normalised image batch) runs
    ``model``'s ``tensor`` mode (backbone, neck, heads; no
    post-processing), in eval mode."""
    import torch

    class TensorForward(torch.nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> Any:
            return self.model(inputs, None, mode='tensor')

    return TensorForward().eval()


def flat_outputs(outputs: Any) -> List[torch.Tensor]:
    """The tensors of a (nested) model output, in pytree order (the order
    of the ONNX graph's outputs)."""
    import torch
    from torch.utils._pytree import tree_leaves
    return [t for t in tree_leaves(outputs) if isinstance(t, torch.Tensor)]


def export(module: torch.nn.Module, x: torch.Tensor, path: str,
           dynamic: bool, min_size: int) -> int:
    """Export ``module(x)`` to ``path``; return the smallest height/width the
    file accepts (``x``'s size when not dynamic).

    A dynamic export whose traced graph holds only from some size up is
    retried once with the range the exporter suggests, if it contains
    ``x``'s size. Raises :class:`Unexportable` otherwise.
    """
    import torch
    from torch.export import Dim

    size = min(x.shape[2:])
    for _ in range(2):
        shapes = None
        if dynamic:
            shapes = ({2: Dim('height', min=min_size, max=MAX_SIZE),
                       3: Dim('width', min=min_size, max=MAX_SIZE)}, )
        try:
            torch.onnx.export(module, (x, ), path, dynamo=True,
                              dynamic_shapes=shapes, verbose=False)
            return min_size if dynamic else size
        except Exception as exc:  # the exporter raises many types
            found = [int(v) for _, v in _SUGGESTED_MIN.findall(str(exc))]
            if not dynamic or not found or max(found) <= min_size:
                raise Unexportable(_one_line(exc)) from exc
            if max(found) > size:
                raise Unexportable(
                    f'the dynamically traced graph holds only for inputs of '
                    f'at least {max(found)} pixels per side; use --shape '
                    f'with H, W >= {max(found)}') from exc
            min_size = max(found)
    raise Unexportable('the exporter kept narrowing the size range')


def run_onnx(path: str, x: torch.Tensor) -> List[Any]:
    """Outputs of the ONNX file on ``x`` (onnxruntime, CPU)."""
    from mmtwins.deploy.runtime import create_session
    session = create_session(path)
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.numpy()})


def compare(module: torch.nn.Module, path: str,
            x: torch.Tensor) -> List[Tuple[float, float]]:
    """(largest absolute difference, that over the largest absolute
    reference value) per output, ONNX against PyTorch."""
    import torch
    with torch.no_grad():
        refs = flat_outputs(module(x))
    got = run_onnx(path, x)
    if len(got) != len(refs):
        raise RuntimeError(f'the ONNX file has {len(got)} outputs, PyTorch '
                           f'{len(refs)}')
    diffs = []
    for out, ref in zip(got, refs):
        out = torch.from_numpy(out)
        if out.shape != ref.shape:
            raise RuntimeError(f'ONNX output shape {tuple(out.shape)} != '
                               f'PyTorch {tuple(ref.shape)}')
        err = (out.double() - ref.double()).abs().max().item() \
            if ref.numel() else 0.
        scale = ref.double().abs().max().item() if ref.numel() else 0.
        diffs.append((err, err / max(scale, 1e-12)))
    return diffs


def export_and_check(name: str, module: torch.nn.Module, path: str,
                     shapes: Sequence[Tuple[int, int]], dynamic: bool,
                     min_size: int, rtol: float) -> bool:
    """Export ``module``, check it at every shape, print one line per
    shape; return whether every output is within ``rtol``."""
    import torch

    x = torch.randn(1, 3, *shapes[0])
    start = time.perf_counter()
    low = export(module, x, path, dynamic, min_size)
    took = time.perf_counter() - start
    # Large weights go to ``<file>.data`` next to the graph.
    size_mb = sum(os.path.getsize(p) for p in (path, path + '.data')
                  if osp.isfile(p)) / 2**20
    span = (f'dynamic H, W in [{low}, {MAX_SIZE}]' if dynamic else
            f'static {shapes[0][0]}x{shapes[0][1]}')
    print(f'{name}: exported to {path} ({size_mb:.1f} MiB, {span}, '
          f'{took:.0f} s)')
    ok = True
    for shape in shapes if dynamic else shapes[:1]:
        if min(shape) < low:
            print(f'  {shape[0]}x{shape[1]}: skipped (below {low})')
            continue
        x = torch.randn(1, 3, *shape)
        diffs = compare(module, path, x)
        worst_abs = max(d[0] for d in diffs)
        worst_rel = max(d[1] for d in diffs)
        verdict = 'ok' if worst_rel <= rtol else f'FAIL (> {rtol:g})'
        print(f'  {shape[0]}x{shape[1]}: {len(diffs)} outputs, largest '
              f'difference {worst_abs:.3g} abs, {worst_rel:.3g} relative: '
              f'{verdict}')
        ok = ok and worst_rel <= rtol
    return ok


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Export a config\'s model (by default end to end, with '
        'pre- and post-processing) to ONNX and check the file with '
        'onnxruntime.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='export input height and width (default: the '
                        'test pipeline\'s resize scale)')
    parser.add_argument('--out', help='end-to-end file (default: '
                        'OUT_DIR/<config stem>.onnx)')
    parser.add_argument('--dynamic', action='store_true',
                        help='--backbone-only/--tensor-forward: symbolic '
                        'height and width (end to end always is)')
    parser.add_argument(
        '--check-shape', type=int, nargs=2, metavar=('H', 'W'),
        action='append', help='further sizes to check the file at '
        '(repeatable; default end to end: two sizes around --shape; '
        'otherwise H+96 W+160)')
    parser.add_argument('--int8', action='store_true',
                        help='end to end: also write <file>_int8.onnx, '
                        'statically quantised with onnxruntime and '
                        'calibrated on --calib training images')
    parser.add_argument('--calib', type=int, default=32,
                        help='--int8: training images to calibrate on '
                        '(default 32)')
    parser.add_argument('--sasa-kernel', action='store_true',
                        help='end to end: write each SASA attention as one '
                        'mmtwins.SASAttention node, the fused kernel as an '
                        'onnxruntime custom operator (faster in '
                        'onnxruntime; needs mmtwins\' operator library), '
                        'instead of standard ONNX operators')
    parser.add_argument('--min-size', type=int, default=32,
                        help='smallest dynamic height/width (default 32)')
    parser.add_argument('--out-dir', default='work_dirs/onnx',
                        help='where the .onnx files go')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--backbone-only', action='store_true',
                      help='export and check the backbone only')
    mode.add_argument('--tensor-forward', action='store_true',
                      help='export and check the backbone and the model\'s '
                      'tensor forward (raw head outputs)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='backbone/tensor checks: largest accepted '
                        'relative difference')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.shape is not None and min(args.shape) <= 0:
        parser.error(f'--shape needs positive H and W, got {args.shape}')
    if args.int8 and (args.backbone_only or args.tensor_forward):
        parser.error('--int8 quantises the end-to-end file; leave out '
                     '--backbone-only/--tensor-forward')
    if args.sasa_kernel and (args.backbone_only or args.tensor_forward):
        parser.error('--sasa-kernel applies to the end-to-end file; leave '
                     'out --backbone-only/--tensor-forward')
    if args.calib < 1:
        parser.error(f'--calib must be at least 1, got {args.calib}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import mmtwins  # noqa: F401  (registers the mmtwins modules)
    from tools.cli.config_checks import check_file, load_config
    from tools.cli.errors import ToolError, exit_on_user_error

    with exit_on_user_error(args.debug):
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as exc:
            raise ToolError(f'{exc.name} is not installed; run `pip install '
                            'onnx onnxruntime onnxscript` (or bash '
                            'tools/setup_env.sh)') from None
        cfg = load_config(args.config, args.cfg_options)
        if args.checkpoint is not None:
            check_file(args.checkpoint, 'checkpoint')
        # mmdet's detectors add train/test settings into the model config
        # while they are built: the file's fingerprint uses it as written.
        model_cfg = copy.deepcopy(cfg.model)
        model = build_model(cfg, args.checkpoint)
        if not (args.backbone_only or args.tensor_forward):
            from tools.cli.onnx_export import export_end_to_end_cli
            sys.exit(export_end_to_end_cli(args, cfg, model, model_cfg))
        if not hasattr(model, 'backbone'):
            raise ToolError(f'{type(model).__name__} has no backbone to '
                            'export')
        if args.shape is None:
            from tools.cli.onnx_export import default_shape
            args.shape = default_shape(cfg)
        h, w = args.shape
        shapes = [(h, w)] + [tuple(s) for s in (args.check_shape or
                                                 [(h + 96, w + 160)])]
        os.makedirs(args.out_dir, exist_ok=True)
        stem = osp.splitext(osp.basename(args.config))[0]
        backbone = model.backbone
        print(f'Config: {args.config} ({type(model).__name__} with '
              f'{type(backbone).__name__}), torch {_torch_version()}')
        try:
            ok = export_and_check(
                f'backbone {type(backbone).__name__}', backbone,
                osp.join(args.out_dir, f'{stem}_backbone.onnx'), shapes,
                args.dynamic, args.min_size, args.rtol)
        except Unexportable as exc:
            raise ToolError(f'cannot export {type(backbone).__name__} to '
                            f'ONNX: {exc}') from None
        if args.tensor_forward:
            try:
                export_and_check(
                    f'model {type(model).__name__} (tensor forward)',
                    tensor_forward(model),
                    osp.join(args.out_dir, f'{stem}_tensor.onnx'), shapes,
                    args.dynamic, args.min_size, args.rtol)
            except Unexportable as exc:
                print(f'model {type(model).__name__}: not exportable, the '
                      f'backbone file stands ({exc})')
    sys.exit(0 if ok else 1)


def _torch_version() -> str:
    import torch
    return torch.__version__


if __name__ == '__main__':
    main()
