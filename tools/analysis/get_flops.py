"""Parameters and FLOPs of the model a config builds.

Usage::

    python tools/analysis/get_flops.py CONFIG [--shape H W]
        [--cfg-options KEY=VALUE ...]

Without ``--shape`` the input is the papers' FLOPs resolution: 800x600
(H x W = 600 x 800) for mmdet configs, 512 x 512 otherwise.

Works for any mmdet or mmseg config: the registry scope comes from the
config's ``default_scope``. One blank image of ``H x W`` goes through the
model's own data preprocessor (so detection inputs are padded to the size
divisor, as in training and testing) and then through the model's ``tensor``
mode forward (backbone, neck and heads; no post-processing for one-stage
detectors and segmentors, RPN proposals + RoI heads for two-stage detectors).

Counting uses mmengine's analysis (:class:`mmengine.analysis.FlopAnalyzer`,
the fvcore convention): one multiply-add counts as one FLOP, convolutions,
linear layers, matrix products and norms are counted, element-wise ops are
not (the convention of fvcore, which the Twins repo's UperNet FLOPs used).
mmengine has no rule for ``aten::scaled_dot_product_attention``, so one is
added here: its two matrix products (q @ k^T and attn @ v), exactly what an
explicit ``matmul`` implementation would be charged.

The same goes for SASA's local attention (the custom op
``mmtwins::sasa_attention``, traced as one node): per pixel and head,
``head_dim * (2 k^2 + k)`` for the k x k logits, the k row plus k column
positional logits and the weighted sum of values (windows are charged in
full at the borders, as a convolution is). For the count the op is
swapped for a stand-in with the same inputs and output shape
(``_SASAFlops``) that the tracer records as one node without running the
attention. Other custom
autograd functions would go uncounted, so, mmcv's RoIAlign and NMS aside,
the tool refuses to report a total then.

Two-stage detectors are charged for exactly ``test_cfg.rpn.max_per_img``
proposals (1000 in mmdet's configs): the RPN's NMS is disabled for the count
(IoU threshold 1.0), as mmdet 2.x's ``forward_dummy`` fed 1000 boxes, so the
figure does not depend on how many boxes a randomly initialised RPN keeps.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import tools.cli  # noqa: E402,F401  (quiet start: no third-party warnings)

if TYPE_CHECKING:  # heavy imports wait until a config is known to exist
    import torch
    from mmengine.config import Config


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``scaled_dot_product_attention``: q @ k^T plus attn @ v."""
    from mmengine.analysis.jit_handles import get_shape

    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = 1
    for dim in q_shape[:-2]:
        batch *= dim
    len_q, dim_qk = q_shape[-2:]
    len_k, dim_v = k_shape[-2], v_shape[-1]
    return batch * len_q * len_k * (dim_qk + dim_v)


def sasa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of SASA's k x k local attention (``mmtwins::sasa_attention``).
    """
    from mmengine.analysis.jit_handles import get_shape

    batch, heads, head_dim, height, width = get_shape(inputs[0])
    kernel_size = get_shape(inputs[3])[0]
    return (batch * heads * height * width * head_dim *
            (2 * kernel_size**2 + kernel_size))


# Rules for ops mmengine does not count, by traced op kind.
EXTRA_HANDLES = {
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'mmtwins::sasa_attention': sasa_flop_jit,
    'prim::PythonOp._SASAFlops': sasa_flop_jit,
}


# Default input (H, W) by scope: the FLOPs resolutions of the papers' tables
# (Twins: 800x600 for COCO, 512x512 for ADE20K).
DEFAULT_SHAPES = {'mmdet': (600, 800), 'mmseg': (512, 512)}

# Custom autograd ops that hold no multiply-adds worth counting (fvcore does
# not count them either): mmcv's RoI feature sampling and NMS.
UNCOUNTED_OPS = ('prim::PythonOp.RoIAlignFunction', 'prim::PythonOp.NMSop')


@contextlib.contextmanager
def _sasa_traced_as_one_op() -> Iterator[None]:
    """Swap SASA's local attention for a one-node stand-in while tracing.

    The stand-in takes the same tensors and returns a tensor of the output
    shape, so the tracer records one ``prim::PythonOp._SASAFlops`` that
    :func:`sasa_flop_jit` charges exactly as the real op.
    """
    try:
        layer = importlib.import_module('mmtwins.models.layers.sasa_attention')
    except ImportError:  # no SASA layers in this mmtwins: nothing to swap
        yield
        return
    import torch

    class _SASAFlops(torch.autograd.Function):

        @staticmethod
        def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, rel_h: torch.Tensor,
                    rel_w: torch.Tensor) -> torch.Tensor:
            return value.clone()

    real = layer.sasa_attention
    layer.sasa_attention = _SASAFlops.apply
    try:
        yield
    finally:
        layer.sasa_attention = real


def _tensor_forward(model: torch.nn.Module,
                    data_samples: Optional[list]) -> torch.nn.Module:
    """Wrap a model so that one tensor argument runs its ``tensor`` mode.

    The tracer behind :class:`FlopAnalyzer` only passes tensors, so the data
    samples (image metas) are bound here.
    """
    import torch

    class TensorForward(torch.nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: torch.Tensor) -> Any:
            return self.model(inputs, data_samples, mode='tensor')

    return TensorForward()


def load_config(path: str,
                cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read a config file, failing with one clear line when it is absent."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    from mmengine.config import Config

    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ValueError(f'config has no `model`: {path}')
    return cfg


def build_model(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` under the config's default scope, in eval mode.

    Pretrained weights are not loaded (counts do not depend on them) and
    SyncBN becomes BN so that no process group is needed.
    """
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope

    # Scoped, not init_default_scope(): callers keep their own scope.
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', None) or 'mmengine'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def measure(cfg: Config, shape: Sequence[int]) -> Dict[str, Any]:
    """Count the parameters and FLOPs of ``cfg.model`` on one H x W image.

    Returns a dict with ``params`` and ``flops`` (plain counts) and
    ``input_shape`` (the (H, W) the network saw after preprocessing).
    """
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.registry import DefaultScope
    from mmengine.structures import BaseDataElement

    height, width = shape
    rpn = cfg.model.get('test_cfg', {}).get('rpn')
    if rpn is not None and 'nms' in rpn:
        cfg = copy.deepcopy(cfg)
        cfg.model.test_cfg.rpn.nms.iou_threshold = 1.0
    model = build_model(cfg)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    meta = dict(
        img_shape=(height, width),
        ori_shape=(height, width),
        scale_factor=(1.0, 1.0))
    batch = dict(inputs=[image], data_samples=[BaseDataElement(metainfo=meta)])
    scope = cfg.get('default_scope', None) or 'mmengine'
    with torch.no_grad(), _sasa_traced_as_one_op(), \
            DefaultScope.overwrite_default_scope(scope):
        data = model.data_preprocessor(batch, training=False)
        inputs = data['inputs']
        analyzer = FlopAnalyzer(
            _tensor_forward(model, data.get('data_samples')), (inputs, ))
        analyzer.set_op_handle(**EXTRA_HANDLES)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = analyzer.total()
    custom = sorted(op for op in analyzer.unsupported_ops()
                    if op.startswith('prim::PythonOp')
                    and op not in UNCOUNTED_OPS)
    if custom:
        raise RuntimeError(
            f'no FLOP rule for the custom autograd op(s) {custom}; add one '
            'to EXTRA_HANDLES in get_flops.py')
    return dict(
        params=parameter_count(model)[''],
        flops=flops,
        input_shape=tuple(inputs.shape[-2:]))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Count the parameters and FLOPs of a config\'s model.')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        default=None,
        help='input image height and width (default: the papers\' sizes, '
        '600 800 for mmdet configs (800x600) and 512 512 otherwise)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.arch=base')
    args = parser.parse_args(argv)
    if args.shape is not None and min(args.shape) <= 0:
        parser.error(f'--shape needs positive H and W, got {args.shape}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print the counts for one config."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'get_flops.py: error: {err}')
    shape = args.shape or DEFAULT_SHAPES.get(cfg.get('default_scope'),
                                             (512, 512))
    result = measure(cfg, shape)
    height, width = shape
    pad_h, pad_w = result['input_shape']
    print(f'Config: {args.config}')
    print(f'Input shape: {height}x{width} (network input {pad_h}x{pad_w})')
    print(f'Flops: {result["flops"] / 1e9:.2f} G')
    print(f'Params: {result["params"] / 1e6:.3f} M')


if __name__ == '__main__':
    main()
