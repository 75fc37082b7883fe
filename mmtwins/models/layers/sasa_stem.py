"""The attention stem of SASA's full-attention models.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909, §4.3 (no official code was released).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch import Tensor, nn

from mmtwins.registry import MODELS

from .sasa_attention import check_input


@MODELS.register_module()
class SASAStem(nn.Module):
    """Self-attention within 4x4 pixel blocks, BatchNorm, 4x4 max pooling.

    Plain local attention works poorly on raw pixels, so SASA's stem makes
    the values aware of where they sit in the pooling block (§4.3): the
    value of pixel ``(a, b)`` is ``v_ab = (sum_m p(a, b, m) W_V^m) x_ab``,
    a convex combination of ``num_mixtures`` value matrices with
    ``p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m)``, where
    ``emb_row``/``emb_col`` are absolute embeddings of the row and column
    inside the block and ``nu_m`` one embedding per mixture; ``p`` is
    shared by all heads. Each pixel attends over the pixels of its own
    ``block_size x block_size`` block (the receptive field of the following
    max pool), with the same ``q . k + q . r`` logits, head-wise
    row/column split and ``head_dim ** -0.5`` scale as
    :class:`~mmtwins.models.layers.SASAttention`. The output then goes
    through the norm layer and a ``block_size`` max pool with stride
    ``block_size``, which replaces the ResNet stem's stride 4 (the paper
    names BatchNorm and max pooling only, so there is no activation).

    Number of value mixtures: the paper does not state it. We use 4 by
    default, as many as the stem's heads: one mixture (``num_mixtures=1``)
    is the plain-value stem of SASA Table 7, and 16 would give each
    position of the 4x4 block its own value matrix, i.e. a 4x4 convolution
    for the values (the "spatial convolution" row). Four mixtures sit in
    between, share value matrices across positions as the paper intends,
    and cost ``4 * 64 * 3`` weights, so the parameter totals of SASA
    Table 1 are met with either stem.

    Images whose sides are not multiples of ``block_size`` are padded at
    the bottom and right; padded pixels are masked out as keys, and the
    max pool takes a last partial window over in-image pixels only, so the
    output is ``ceil(H / block_size) x ceil(W / block_size)`` like a
    ResNet stem.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        out_channels (int): Stem width. Defaults to 64.
        num_heads (int): Attention heads. Defaults to 4.
        block_size (int): Side of the attention block and of the max pool.
            Defaults to 4.
        num_mixtures (int): Value matrices mixed per position. Defaults
            to 4.
        norm_cfg (dict): Norm after the attention. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        qk_scale (float, optional): Logit scale. Defaults to None, which
            means ``head_dim ** -0.5``.

    Examples:
        >>> stem = SASAStem(3, 64)
        >>> stem(torch.rand(2, 3, 30, 33)).shape
        torch.Size([2, 64, 8, 9])
    """

    def __init__(self,
                 in_channels: int = 3,
                 out_channels: int = 64,
                 num_heads: int = 4,
                 block_size: int = 4,
                 num_mixtures: int = 4,
                 norm_cfg: Optional[dict] = None,
                 qk_scale: Optional[float] = None) -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels),
                            ('out_channels', out_channels),
                            ('num_heads', num_heads),
                            ('block_size', block_size),
                            ('num_mixtures', num_mixtures)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'SASAStem: {name} must be a positive int, '
                                 f'got {value!r}')
        if out_channels % num_heads:
            raise ValueError(
                f'SASAStem: out_channels ({out_channels}) must be divisible '
                f'by num_heads ({num_heads})')
        head_dim = out_channels // num_heads
        if head_dim % 2:
            raise ValueError(
                f'SASAStem: the head width out_channels / num_heads = '
                f'{head_dim} must be even, to split it between row and '
                'column offsets')
        if norm_cfg is None:
            norm_cfg = dict(type='BN', requires_grad=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.block_size = block_size
        self.num_mixtures = num_mixtures
        self.scale = head_dim**-0.5 if qk_scale is None else qk_scale

        self.query_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        # num_mixtures value matrices, stacked along the output channels.
        self.value_conv = nn.Conv2d(
            in_channels, num_mixtures * out_channels, 1, bias=False)
        span = 2 * block_size - 1
        self.rel_h = nn.Parameter(torch.empty(span, out_channels // 2))
        self.rel_w = nn.Parameter(torch.empty(span, out_channels // 2))
        self.emb_row = nn.Parameter(torch.empty(block_size, out_channels))
        self.emb_col = nn.Parameter(torch.empty(block_size, out_channels))
        self.emb_mix = nn.Parameter(torch.empty(num_mixtures, out_channels))
        self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
        self.add_module(self.norm_name, norm)

        # For query t of a block (pixels row-major) and key row (or column)
        # j of the block: the offset-table row j - t // size + size - 1
        # (j - t % size + size - 1).
        pos = torch.arange(block_size**2)
        lines = torch.arange(block_size)
        self.register_buffer(
            '_row_index', lines[None] - pos[:, None] // block_size
            + block_size - 1, persistent=False)
        self.register_buffer(
            '_col_index', lines[None] - pos[:, None] % block_size
            + block_size - 1, persistent=False)
        self.reset_parameters()

    @property
    def norm(self) -> nn.Module:
        return getattr(self, self.norm_name)

    def reset_parameters(self) -> None:
        """Initialise the projections and embeddings (see SASAttention)."""
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.reset_parameters()
        for table in (self.rel_h, self.rel_w, self.emb_row, self.emb_col,
                      self.emb_mix):
            nn.init.normal_(table, std=1.0)

    def mixture_weights(self) -> Tensor:
        """``p(a, b, m)`` of shape ``(block, block, num_mixtures)``."""
        position = self.emb_row[:, None, :] + self.emb_col[None, :, :]
        return torch.einsum('abe,me->abm', position, self.emb_mix).softmax(-1)

    def attend(self, x: Tensor) -> Tensor:
        """The block attention, before the norm and the pooling.

        Everything runs on blocks of the input image, ``(B * blocks,
        size^2, in_channels)``: queries, keys and values are products of
        the few-channel image (no full-resolution projection is
        rearranged), and the attention's output is rearranged into an
        image once. The positional logits are computed per query for each
        row and each column of its block (``size`` of each, not
        ``size^2``) and added to ``q . k`` by broadcasting.

        Args:
            x (Tensor): ``(B, in_channels, H, W)``.

        Returns:
            Tensor: ``(B, out_channels, H, W)``.
        """
        batch, _, height, width = x.shape
        size = self.block_size
        area = size * size
        pad_h, pad_w = -height % size, -width % size
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        heads, dim, half = self.num_heads, self.head_dim, self.head_dim // 2

        def blocks(t: Tensor) -> Tensor:
            # (B, C, H, W) -> (B * rows * cols, size * size, C)
            t = F.pad(t, (0, pad_w, 0, pad_h))
            t = t.view(t.shape[0], t.shape[1], rows, size, cols, size)
            return t.permute(0, 2, 4, 3, 5, 1).reshape(
                t.shape[0] * rows * cols, area, t.shape[1])

        pixels = blocks(x)  # (N, size^2, in_channels)
        weight = torch.cat((self.query_conv.weight * self.scale,
                            self.key_conv.weight)).flatten(1)
        count = batch * rows * cols
        query, key = (pixels @ weight.t()).view(
            count, area, 2, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
        # Positional logits of every query for each row and each column of
        # its block: (N, heads, size^2, size) each.
        rel_h = self.rel_h.view(-1, heads, half).transpose(0, 1)
        rel_w = self.rel_w.view(-1, heads, half).transpose(0, 1)
        queries = torch.arange(area, device=x.device)[:, None]
        pos_row = (query[..., :half] @ rel_h.transpose(1, 2))[
            ..., queries, self._row_index]
        pos_col = (query[..., half:] @ rel_w.transpose(1, 2))[
            ..., queries, self._col_index]
        # q . k, plus the positional logit of the key's row and column.
        logits = (query @ key.transpose(-1, -2)).view(
            *query.shape[:3], size, size)
        logits = (logits + pos_row[..., :, None] +
                  pos_col[..., None, :]).flatten(-2)
        # Padded pixels are masked out as keys. Applied whether or not
        # there is padding, so that no branch depends on the image size
        # (torch.export keeps height and width symbolic).
        inside = blocks(x.new_ones(1, 1, height, width)) > 0
        logits = logits.view(batch, rows * cols, heads, area,
                             area).masked_fill(
                                 ~inside.view(1, rows * cols, 1, 1, area),
                                 float('-inf'))
        # Spatially aware values: block position t's value matrix is
        # sum_m p(t, m) W_V^m, so no per-mixture value map is formed.
        mixtures = self.value_conv.weight.view(self.num_mixtures,
                                               heads * dim, -1)
        weights = self.mixture_weights().reshape(area, -1)
        value_weight = torch.einsum('tm,moi->tio', weights, mixtures)
        value = torch.bmm(pixels.transpose(0, 1), value_weight).view(
            area, count, heads, dim).permute(1, 2, 0, 3)
        out = logits.softmax(-1).flatten(0, 1) @ value  # (N, h, s^2, d)
        out = out.view(batch, rows, cols, heads, size, size, dim)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(
            batch, heads * dim, rows * size, cols * size)
        return out[:, :, :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        """Attend, normalise and pool.

        Args:
            x (Tensor): Images ``(B, in_channels, H, W)``.

        Returns:
            Tensor: ``(B, out_channels, ceil(H / block), ceil(W / block))``.
        """
        check_input(self, x, self.in_channels, self.query_conv.weight)
        out = self.norm(self.attend(x))
        return F.max_pool2d(out, self.block_size, self.block_size,
                            ceil_mode=True)
