"""Export forms of ``mmtwins::sasa_attention``.

ONNX export with ``torch.onnx.export(..., dynamo=True)``: ``torch.export``
records the op as one node (its fake implementation gives the shapes, so
height and width stay symbolic), and the ONNX exporter then decomposes every
op that has no ONNX translation with the decompositions in
``torch._decomp.decomposition_table``. Importing mmtwins registers
:func:`sasa_attention_decomposition` there, so callers pass nothing extra
(no ``custom_translation_table``): the op becomes a convolution with fixed
one-hot kernels (the k^2 neighbours, zero outside the image), products, a
masked softmax and a weighted sum, all standard ONNX operators whose sizes
follow the input's height and width.

The decomposition is a plain function of standard ops, so it is also what
the tests compare the kernels with. It materialises the ``k^2``-wide logits
of the whole map and is meant for export, not for training.

:func:`kernel_translations` gives the other export form: passed as
``custom_translation_table``, it writes the op as one node
``mmtwins.SASAttention``, the fused kernel as an onnxruntime custom
operator (:mod:`.sasa_ort`), which onnxruntime runs several times faster
than the decomposition but only with mmtwins' operator library registered.

The TorchScript exporter (``dynamo=False``) traces Python execution and
cannot see into a custom op; :func:`_refuse_torchscript_export` is registered
as the op's symbolic so that it stops with one clear line instead of
writing an unusable graph.
"""
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def sasa_attention_decomposition(query: Tensor, key: Tensor, value: Tensor,
                                 rel_h: Tensor,
                                 rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """``mmtwins::sasa_attention`` written with standard ops.

    Args and returns as the op (see :mod:`.sasa_op`): queries, keys and
    values ``(B, heads, d, H, W)``, offset tables ``(k, heads, d / 2)``;
    the output ``(B, heads, d, H, W)`` and the log-sum-exp of the logits
    ``(B, heads, H, W)``.
    """
    height, width = query.shape[-2:]
    size = rel_h.shape[0]
    half = query.shape[2] // 2
    # One-hot k x k kernels: output channel dy * k + dx of a convolution
    # with them is the neighbour at offset (dy - k // 2, dx - k // 2), zero
    # outside the image. One Conv node per tensor instead of k^2 slices
    # keeps the exported graph (and the exporter's time) small.
    eye = torch.eye(size * size, dtype=query.dtype, device=query.device)
    eye = eye.view(size * size, 1, size, size)

    def neighbours(x: Tensor) -> Tensor:
        """(B, heads, d, H, W) -> (B, heads, d, k*k, H, W)."""
        out = F.conv2d(x.reshape(-1, 1, height, width), eye,
                       padding=size // 2)
        return out.view(*x.shape[:3], size * size, height, width)

    # 1 where the neighbour is inside the image, 0 in the padding.
    inside = F.conv2d(torch.ones_like(query[:1, 0, :1]), eye,
                      padding=size // 2)[0]
    # Positional logits (B, heads, k, H, W) for rows and for columns, then
    # their sum for every (row, column) offset.
    pos_row = torch.einsum('bhdyx,khd->bhkyx', query[:, :, :half], rel_h)
    pos_col = torch.einsum('bhdyx,khd->bhkyx', query[:, :, half:], rel_w)
    pos = (pos_row[:, :, :, None] + pos_col[:, :, None, :]).flatten(2, 3)
    logits = (query[:, :, :, None] * neighbours(key)).sum(2) + pos
    logits = logits.masked_fill(inside == 0, float('-inf'))
    lse = torch.logsumexp(logits, dim=2)
    probs = torch.softmax(logits, dim=2)
    out = (probs[:, :, None] * neighbours(value)).sum(3)
    return out, lse


def _register_kernel_schema() -> None:
    """Declare ``mmtwins.SASAttention`` (version 1) to onnx, so that
    onnxscript can write the node and onnx's checker knows its signature.
    """
    import onnx
    from onnx.defs import OpSchema

    from .sasa_ort import DOMAIN, OP_TYPE, OPSET_VERSION
    if onnx.defs.has(OP_TYPE, OPSET_VERSION, DOMAIN):
        return
    tensor = [('T', ['tensor(float)'], 'float32 tensors')]
    onnx.defs.register_schema(OpSchema(
        OP_TYPE, DOMAIN, OPSET_VERSION,
        doc='SASA k x k local attention (mmtwins.ops.sasa_op): query, key, '
        'value (B, heads, D, H, W), rel_h, rel_w (k, heads, D / 2) -> '
        'output (B, heads, D, H, W), lse (B, heads, H, W).',
        inputs=[OpSchema.FormalParameter(name, 'T') for name in
                ('query', 'key', 'value', 'rel_h', 'rel_w')],
        outputs=[OpSchema.FormalParameter(name, 'T') for name in
                 ('output', 'lse')],
        type_constraints=tensor))


def _kernel_node(query, key, value, rel_h, rel_w):
    """onnxscript translation: one ``mmtwins.SASAttention`` node."""
    from onnxscript import values

    from .sasa_ort import DOMAIN, OPSET_VERSION
    _register_kernel_schema()
    opset = values.Opset(DOMAIN, OPSET_VERSION)
    out, lse = opset.SASAttention(query, key, value, rel_h, rel_w)
    return out, lse


def kernel_translations() -> Dict[object, Callable]:
    """``custom_translation_table`` entries that export the op as the
    onnxruntime custom operator instead of standard operators."""
    return {torch.ops.mmtwins.sasa_attention.default: _kernel_node}


def _refuse_torchscript_export(g, *args):
    raise RuntimeError(
        'mmtwins::sasa_attention cannot be exported by the TorchScript ONNX '
        'exporter (dynamo=False); use torch.onnx.export(..., dynamo=True)')


def register() -> None:
    """Register the export forms (called once when mmtwins is imported)."""
    from torch._decomp import decomposition_table
    op = torch.ops.mmtwins.sasa_attention.default
    if op not in decomposition_table:
        decomposition_table[op] = sasa_attention_decomposition
    from torch.onnx import register_custom_op_symbolic

    # A symbolic registered for opset 7 serves every later opset.
    register_custom_op_symbolic('mmtwins::sasa_attention',
                                _refuse_torchscript_export, 7)
