"""Locally-grouped self-attention (LSA) of Twins-SVT.

Twins (Chu et al., NeurIPS 2021, arXiv 2104.13840, official code
https://github.com/Meituan-AutoML/Twins, Apache-2.0): tokens attend within
non-overlapping ``ws x ws`` windows. When the map is not a multiple of the
window it is padded at the bottom/right, and what the padded tokens do is
where the existing implementations disagree (see ``LSA_PAD_MODES``):

* ``'zero'``: the official detection code and timm. Padding is applied after
  ``norm1`` and before ``qkv``, so padded tokens are zero vectors whose keys
  and values equal the ``qkv`` bias, and real tokens attend to them.
* ``'mask'``: padded keys are masked out, so every real token attends to real
  tokens only, whatever the padding. The mathematically clean choice and the
  default.
* ``'mmseg'``: the official segmentation code, mmseg 1.x and mmpretrain. Their
  mask is built with ``mask[-pad:] = 1`` slices; a pad of 0 selects the whole
  axis, so the mask only works when *both* height and width are padded and
  vanishes when only one side is (then it equals ``'zero'``). Use it to
  reproduce checkpoints trained with that code bit for bit.

The parameter names (``qkv`` with q|k|v stacked head-major, ``proj``) are the
official/timm ones.
"""
from functools import partial
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fused_linear import linear
from .lean_norm import NormWindowLinearFunction, recompute_norm

LSA_PAD_MODES = ('mask', 'zero', 'mmseg')


class LocallyGroupedAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows.

    Windows are batched and run through
    :func:`torch.nn.functional.scaled_dot_product_attention`; the key mask
    (a few bytes per window) is built once per map size and cached.

    Args:
        embed_dims (int): Token width ``C``.
        num_heads (int): Number of heads; must divide ``C``.
        window_size (int): Window side ``ws``. Defaults to 7.
        pad_mode (str): How windows cover maps that are not a multiple of
            ``ws``: ``'mask'``, ``'zero'`` or ``'mmseg'`` (module docstring).
            Defaults to ``'mask'``.
        qkv_bias (bool): Whether ``qkv`` has a bias. Defaults to True.
        attn_drop (float): Dropout on attention probabilities. Defaults to 0.
        proj_drop (float): Dropout after ``proj``. Defaults to 0.

    Examples:
        >>> attn = LocallyGroupedAttention(64, num_heads=2, window_size=7)
        >>> attn(torch.rand(2, 30 * 40, 64), (30, 40)).shape
        torch.Size([2, 1200, 64])
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int = 7,
                 pad_mode: str = 'mask',
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        if pad_mode not in LSA_PAD_MODES:
            raise ValueError(f'unknown lsa pad mode {pad_mode!r}; choose one '
                             f'of {LSA_PAD_MODES}')
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.window_size = window_size
        self.pad_mode = pad_mode
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self._masks: Dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, pad_mode={self.pad_mode!r}'

    def _masks_padding(self, pad_b: int, pad_r: int) -> bool:
        """Whether padded keys are excluded for this padding."""
        if self.pad_mode == 'mask':
            return bool(pad_b or pad_r)
        if self.pad_mode == 'mmseg':
            return bool(pad_b and pad_r)
        return False

    def _key_mask(self, b: int, h: int, w: int,
                  device: torch.device) -> torch.Tensor:
        """Boolean (B * windows, 1, 1, ws*ws) mask, True for real tokens."""
        key = (b, h, w, device)
        mask = self._masks.get(key)
        if mask is None:
            ws = self.window_size
            nh, nw = -(-h // ws), -(-w // ws)
            rows = (torch.arange(nh * ws, device=device) < h).view(nh, ws)
            cols = (torch.arange(nw * ws, device=device) < w).view(nw, ws)
            mask = rows[:, None, :, None] & cols[None, :, None, :]
            mask = mask.reshape(1, nh * nw, 1, 1, ws * ws).expand(
                b, -1, -1, -1, -1).reshape(b * nh * nw, 1, 1, ws * ws)
            if len(self._masks) > 32:  # bound the cache (multi-scale)
                self._masks.clear()
            self._masks[key] = mask
        return mask

    def _windows(self, x: torch.Tensor,
                 hw_shape: Tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) tokens -> (B*windows, ws*ws, C), window-major, with
        zero tokens padded at the bottom/right (one copy, ``C`` wide rather
        than the ``3C`` of the qkv output). Padded tokens' keys and values
        are the qkv bias; the pad mode decides whether real tokens see
        them."""
        b, _, c = x.shape
        h, w = hw_shape
        ws = self.window_size
        pad_b, pad_r = -h % ws, -w % ws
        x = x.view(b, h, w, c)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
        return x.view(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4,
                                                    5).reshape(-1, ws * ws, c)

    def forward(self,
                x: torch.Tensor,
                hw_shape: Tuple[int, int],
                residual: Optional[torch.Tensor] = None,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """Attend within windows.

        Args:
            x (Tensor): Tokens of shape (B, H*W, C) in row-major order.
            hw_shape (tuple[int, int]): ``(H, W)`` of the token map.
            residual (Tensor, optional): Added to the output. Defaults to
                None.
            norm (nn.Module, optional): Applied to ``x`` first (the
                block's ``norm1``); when gradients are wanted its padded,
                window-major output is recomputed in backward instead of
                stored (:class:`NormWindowLinearFunction`). Defaults to
                None.

        Returns:
            Tensor: Shape (B, H*W, C).
        """
        b, n, c = x.shape
        h, w = hw_shape
        ws, heads = self.window_size, self.num_heads
        pad_b, pad_r = -h % ws, -w % ws
        nh, nw, d = -(-h // ws), -(-w // ws), c // heads
        windows = partial(self._windows, hw_shape=hw_shape)
        if norm is not None and recompute_norm(norm):
            qkv = NormWindowLinearFunction.apply(
                x, norm.weight, norm.bias, norm.eps, windows,
                self.qkv.weight, self.qkv.bias)
        else:
            if norm is not None:
                x = norm(x)
            qkv = linear(windows(x), self.qkv)
        # q/k/v are (B*windows, heads, ws*ws, d) views of the qkv output;
        # 4-D inputs keep SDPA on its fused kernels.
        qkv = qkv.view(b * nh * nw, ws * ws, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        masked = self._masks_padding(pad_b, pad_r)
        mask: Optional[torch.Tensor] = None
        if masked:
            mask = self._key_mask(b, h, w, x.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.)
        # The fused kernels lay the output out as (B*windows, ws*ws, heads,
        # d), so this is a view and ``proj`` shares the tensor that SDPA
        # keeps for backward. ``proj`` is per token, so applying it before
        # cropping the padding changes nothing but a little work.
        out = linear(out.transpose(1, 2).reshape(b * nh * nw, ws * ws, c),
                     self.proj)
        out = self.proj_drop(out)
        out = out.view(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        if pad_b or pad_r:
            out = out.reshape(b, nh * ws, nw * ws, c)[:, :h, :w]
        else:
            out = out.reshape(b, h, w, c) if residual is None else out
        if residual is None:
            return out.reshape(b, n, c)
        # The addition reads the window-major (or cropped) layout and
        # writes row-major tokens: one pass instead of a copy and an add.
        return (residual.reshape(out.shape) + out).reshape(b, n, c)
