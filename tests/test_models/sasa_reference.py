"""Straightforward unfold-based SASA, the yardstick for the fast layer.

Written to be obviously right rather than fast: keys and values are
unfolded into ``(B, heads, head_dim, k*k, H*W)`` tensors (k^2 copies, as in
the public ports), the positional logits come from explicitly concatenated
``[rel_h[dy], rel_w[dx]]`` vectors, and out-of-image neighbours are masked
with an unfolded validity map. Used by the SASA tests and by
``tools/analysis/benchmark_sasa.py``.
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def unfold_sasa_attention(query: Tensor, key: Tensor, value: Tensor,
                          rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """Reference for :func:`mmtwins.ops.sasa_attention`.

    Args:
        query (Tensor): ``(B, heads, head_dim, H, W)``, already scaled.
        key (Tensor): Same shape as ``query``.
        value (Tensor): Same shape as ``query``.
        rel_h (Tensor): ``(k, heads, head_dim // 2)`` row-offset table.
        rel_w (Tensor): ``(k, heads, head_dim // 2)`` column-offset table.

    Returns:
        Tensor: ``(B, heads, head_dim, H, W)``.
    """
    batch, heads, head_dim, height, width = query.shape
    size = rel_h.shape[0]
    pad = size // 2
    window = size * size
    keys = F.unfold(key.reshape(batch, heads * head_dim, height, width),
                    size, padding=pad).view(batch, heads, head_dim, window,
                                            height * width)
    values = F.unfold(value.reshape(batch, heads * head_dim, height, width),
                      size, padding=pad).view(batch, heads, head_dim, window,
                                              height * width)
    # r[h, :, dy, dx] = concat(rel_h[dy, h], rel_w[dx, h]), per head.
    half = head_dim // 2
    rows = rel_h.permute(1, 2, 0)[:, :, :, None].expand(
        heads, half, size, size)
    cols = rel_w.permute(1, 2, 0)[:, :, None, :].expand(
        heads, half, size, size)
    rel = torch.cat([rows, cols], dim=1).reshape(heads, head_dim, window)

    q = query.reshape(batch, heads, head_dim, height * width)
    logits = (torch.einsum('bhdn,bhdkn->bhkn', q, keys) +
              torch.einsum('bhdn,hdk->bhkn', q, rel))
    ones = query.new_ones(1, 1, height, width)
    inside = F.unfold(ones, size, padding=pad).view(1, 1, window, -1) > 0
    probs = logits.masked_fill(~inside, float('-inf')).softmax(dim=2)
    out = torch.einsum('bhkn,bhdkn->bhdn', probs, values)
    return out.view(batch, heads, head_dim, height, width)


def unfold_sasa_layer(layer, x: Tensor) -> Tensor:
    """Run a :class:`SASAttention` layer's parameters through the reference.

    Args:
        layer (SASAttention): Supplies the weights and settings.
        x (Tensor): ``(B, in_channels, H, W)``.

    Returns:
        Tensor: What ``layer(x)`` must return.
    """
    batch, _, height, width = x.shape
    shape = (batch, layer.num_heads, layer.head_dim, height, width)
    query = F.conv2d(x, layer.query_conv.weight).view(shape) * layer.scale
    key = F.conv2d(x, layer.key_conv.weight).view(shape)
    value = F.conv2d(x, layer.value_conv.weight).view(shape)
    table = (layer.kernel_size, layer.num_heads, layer.head_dim // 2)
    out = unfold_sasa_attention(query, key, value,
                                layer.rel_h.view(table),
                                layer.rel_w.view(table))
    out = out.reshape(batch, layer.out_channels, height, width)
    if layer.stride == 2:
        out = F.avg_pool2d(out, 2, 2, ceil_mode=True)
    return out
