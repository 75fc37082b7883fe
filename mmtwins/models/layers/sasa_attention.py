"""The stand-alone self-attention layer of SASA.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909 (no official code was released; the
google-research folder holds only a README). This is an independent,
exact and memory-lean implementation; the attention kernel lives in
:mod:`mmtwins.ops.sasa_op`.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtwins.ops import sasa_attention
from mmtwins.registry import MODELS


def check_input(module: nn.Module, x: Tensor, in_channels: int,
                weight: Tensor) -> None:
    """One-line errors for a SASA module's input: shape and dtype.

    The dtype must be the parameters' (``weight`` is one of them; fp32
    models take fp32 images); under ``torch.autocast`` the convolutions cast
    it, so any float is accepted. An integer input (e.g. uint8 pixels) is
    told to become float; a float of another dtype may cast either side.
    """
    name = type(module).__name__
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'{name} expects (B, {in_channels}, H, W) input, '
                         f'got shape {tuple(x.shape)}')
    dtype = weight.dtype
    if x.dtype != dtype and not (x.dtype.is_floating_point
                                 and torch.is_autocast_enabled(
                                     x.device.type)):
        if not x.dtype.is_floating_point:
            # Parameters cannot be integers: the input must become float.
            raise TypeError(
                f'{name} got a {x.dtype} input but has {dtype} parameters; '
                f'convert the input to float (x.to({dtype}), after scaling '
                'or normalising it as the model expects)')
        raise TypeError(
            f'{name} got a {x.dtype} input but has {dtype} parameters; '
            f'cast the input (x.to({dtype})) or the model '
            f'(model.to({x.dtype}))')


def _average_pool_2x2_ceil(x: Tensor) -> Tensor:
    """``F.avg_pool2d(x, 2, 2, ceil_mode=True)``, written without ceil_mode.

    One zero row and column are padded at the bottom and right and the
    windows are floor-mode, so the output size is ``(H - 1) // 2 + 1`` (the
    strided 1x1 shortcut's); a window that covers padding averages its
    in-image pixels only (the window sum over the count of in-image
    pixels). Why not ``ceil_mode``: torch 2.13's inductor computes its
    gradient with the wrong divisor on those windows, and ``torch.export``
    cannot prove its output size equal to the shortcut's.
    """
    pad = (0, 1, 0, 1)
    inside = F.pad(x.new_ones(1, 1, *x.shape[-2:]), pad)
    return F.avg_pool2d(F.pad(x, pad), 2, 2) / F.avg_pool2d(inside, 2, 2)


@MODELS.register_module()
class SASAttention(nn.Module):
    """Local multi-head self-attention over a k x k window (SASA §3).

    Each output pixel attends over the ``kernel_size x kernel_size``
    neighbourhood centred on it. Queries, keys and values are bias-free
    1x1 projections of the input; their ``out_channels`` are split into
    ``num_heads`` heads after projection (the paper's 18.0M parameters for
    ResNet-50 count full ``out x in`` projections, not grouped ones). The
    logit of neighbour ``(a, b)`` for pixel ``(i, j)`` is
    ``q . k_ab + q . r_(a-i, b-j)`` where ``r`` concatenates a row-offset
    and a column-offset embedding, each half the head width.

    Decisions the paper leaves open:

    - **Scale.** The logits are multiplied by ``head_dim ** -0.5`` (the
      paper writes none). Head widths range from 8 to 64 across a
      SASA-ResNet, and the scale keeps the softmax equally soft at every
      stage at initialisation; the weights can absorb any constant, so it
      does not change what the layer can express. ``qk_scale=1.0`` gives
      the paper's literal form.
    - **Row/column split per head.** Within every head, the first half of
      the query channels meets the row-offset embedding and the second half
      the column-offset embedding, and every head has its own embeddings.
      ``rel_h`` and ``rel_w`` are stored as ``(kernel_size, out_channels //
      2)`` tables, head ``h`` owning columns ``[h * d / 2, (h + 1) * d /
      2)``. This matches the paper's "single-headed attention on each
      group", costs the same parameters as one ``d_out / 2`` table per axis,
      and, unlike splitting ``d_out`` once across all heads (as the public
      ports do), gives every head both row and column positions.
    - **Borders.** Neighbours outside the image are masked out of the
      softmax; they are not attended as projections of zero padding.

    With ``stride=2`` the attention runs at the input resolution and a 2x2
    average pool with stride 2 follows (SASA §3.1). The pool uses
    ``ceil_mode`` so that odd sizes give ``ceil(H / 2)`` like a strided
    ResNet conv, a last partial window averaging only its in-image pixels.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels, split into heads.
        kernel_size (int): Odd side of the attention window. Defaults to 7.
        num_heads (int): Number of heads; ``out_channels / num_heads`` must
            be even. Defaults to 8.
        stride (int): 1, or 2 for attention followed by 2x2 average
            pooling. Defaults to 1.
        qk_scale (float, optional): Logit scale. Defaults to None, which
            means ``head_dim ** -0.5``.

    Examples:
        >>> layer = SASAttention(16, 32, kernel_size=3, num_heads=4,
        ...                      stride=2)
        >>> layer(torch.rand(2, 16, 9, 12)).shape
        torch.Size([2, 32, 5, 6])
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 stride: int = 1,
                 qk_scale: Optional[float] = None) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('out_channels', out_channels),
                            ('num_heads', num_heads)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'SASAttention: {name} must be a positive int, got '
                    f'{value!r}')
        if (not isinstance(kernel_size, int) or kernel_size <= 0
                or kernel_size % 2 == 0):
            raise ValueError('SASAttention: kernel_size must be a positive '
                             f'odd int, got {kernel_size!r}')
        if out_channels % num_heads:
            raise ValueError(
                f'SASAttention: out_channels ({out_channels}) must be '
                f'divisible by num_heads ({num_heads})')
        head_dim = out_channels // num_heads
        if head_dim % 2:
            raise ValueError(
                f'SASAttention: the head width out_channels / num_heads = '
                f'{head_dim} must be even, to split it between row and '
                'column offsets')
        if stride not in (1, 2):
            raise ValueError(
                f'SASAttention: stride must be 1 or 2, got {stride!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.stride = stride
        self.scale = head_dim**-0.5 if qk_scale is None else qk_scale

        self.query_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.rel_h = nn.Parameter(torch.empty(kernel_size, out_channels // 2))
        self.rel_w = nn.Parameter(torch.empty(kernel_size, out_channels // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the projections and the offset embeddings.

        The projections keep PyTorch's default 1x1 conv init (model-level
        ``init_cfg`` may override it). The embeddings start from N(0, 1):
        with the ``head_dim ** -0.5`` scale the positional logits then
        start at the same order of magnitude as the content logits.
        """
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.reset_parameters()
        nn.init.normal_(self.rel_h, std=1.0)
        nn.init.normal_(self.rel_w, std=1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over each pixel's window.

        Args:
            x (Tensor): Input of shape ``(B, in_channels, H, W)``.

        Returns:
            Tensor: ``(B, out_channels, H, W)``, or ``(B, out_channels,
            ceil(H / 2), ceil(W / 2))`` with ``stride=2``.
        """
        check_input(self, x, self.in_channels, self.query_conv.weight)
        batch, _, height, width = x.shape
        # One 1x1 conv computes q, k and v (the input is read once, and
        # backward is one weight and one input gradient instead of three
        # each); the three weights stay separate parameters, so checkpoints
        # keep their keys. The scale goes into the query weights (no scaled
        # activation copy). At batch 1 the three parts are contiguous.
        weight = torch.cat((self.query_conv.weight * self.scale,
                            self.key_conv.weight, self.value_conv.weight))
        query, key, value = F.conv2d(x, weight).view(
            batch, 3, self.num_heads, self.head_dim, height,
            width).unbind(1)
        table = (self.kernel_size, self.num_heads, self.head_dim // 2)
        out = sasa_attention(query, key, value, self.rel_h.view(table),
                             self.rel_w.view(table))
        out = out.view(batch, self.out_channels, height, width)
        if self.stride == 2:
            out = _average_pool_2x2_ceil(out)
        return out

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, '
                f'kernel_size={self.kernel_size}, '
                f'num_heads={self.num_heads}, stride={self.stride}, '
                f'scale={self.scale:.4g}')

