"""Export forms of ``mmtwins::sasa_attention``.

ONNX export with ``torch.onnx.export(..., dynamo=True)``: ``torch.export``
records the op as one node (its fake implementation gives the shapes, so
height and width stay symbolic), and the ONNX exporter then decomposes every
op that has no ONNX translation with the decompositions in
``torch._decomp.decomposition_table``. Importing mmtwins registers
:func:`sasa_attention_decomposition` there, so callers pass nothing extra
(no ``custom_translation_table``): the op becomes zero padding, k^2 shifted
slices, products, a masked softmax and a weighted sum, all standard ONNX
operators whose sizes follow the input's height and width.

The decomposition is a plain function of standard ops, so it is also what
the tests compare the kernels with. It materialises the ``k^2``-wide logits
of the whole map and is meant for export, not for training.

The TorchScript exporter (``dynamo=False``) traces Python execution and
cannot see into a custom op; :func:`_refuse_torchscript_export` is registered
as the op's symbolic so that it stops with one clear line instead of
writing an unusable graph.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def sasa_attention_decomposition(query: Tensor, key: Tensor, value: Tensor,
                                 rel_h: Tensor,
                                 rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """``mmtwins::sasa_attention`` written with standard ops.

    Args and returns as the op (see :mod:`.sasa_ops`): queries, keys and
    values ``(B, heads, d, H, W)``, offset tables ``(k, heads, d / 2)``;
    the output ``(B, heads, d, H, W)`` and the log-sum-exp of the logits
    ``(B, heads, H, W)``.
    """
    height, width = query.shape[-2:]
    size = rel_h.shape[0]
    radius = size // 2
    half = query.shape[2] // 2
    pad = (radius, radius, radius, radius)
    keys = F.pad(key, pad)
    values = F.pad(value, pad)
    # 1 inside the image, 0 in the padding, for every shifted window.
    inside = F.pad(torch.ones_like(query[0, 0, 0]), pad)
    # Positional logits (B, heads, k, H, W) for rows and for columns.
    pos_row = torch.einsum('bhdyx,khd->bhkyx', query[:, :, :half], rel_h)
    pos_col = torch.einsum('bhdyx,khd->bhkyx', query[:, :, half:], rel_w)
    logits = []
    for dy in range(size):
        for dx in range(size):
            window = (slice(dy, dy + height), slice(dx, dx + width))
            logit = ((query * keys[..., window[0], window[1]]).sum(2) +
                     pos_row[:, :, dy] + pos_col[:, :, dx])
            logits.append(
                logit.masked_fill(inside[window] == 0, float('-inf')))
    logits = torch.stack(logits, dim=2)  # (B, heads, k*k, H, W)
    lse = torch.logsumexp(logits, dim=2)
    probs = torch.softmax(logits, dim=2)
    out = torch.zeros_like(query)
    for dy in range(size):
        for dx in range(size):
            index = dy * size + dx
            out = out + probs[:, :, index:index + 1] * values[
                ..., dy:dy + height, dx:dx + width]
    return out, lse


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
