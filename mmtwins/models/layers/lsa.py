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
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

LSA_PAD_MODES = ('mask', 'zero', 'mmseg')

# SDPA's own choice among all its kernels.
_ALL_SDPA_BACKENDS = [
    SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH
]


def window_sdpa_backends(q: torch.Tensor) -> List[SDPBackend]:
    """The SDPA kernels LSA lets run for queries ``q``.

    PyTorch's CPU flash-attention *backward* in bf16/fp16 is slow on many
    tiny sequences: for Twins-SVT-S's stage-1 windows (1444 x 2 heads x 49
    tokens x 32) it took 124 ms against 36 ms for SDPA's math kernel,
    forward and backward together (2-core AVX-512 CPU, torch 2.13), which
    made SVT-S train slower than mmseg under bf16 autocast. Its forward is
    fast (5.4 ms against 17.5 ms), so only queries that need a gradient,
    on the CPU, in reduced precision, get the math kernel; everything else
    (fp32, CUDA, inference) keeps SDPA's own choice. Same function either
    way: only the kernel differs.
    """
    if q.device.type == 'cpu' and q.requires_grad and \
            q.dtype in (torch.bfloat16, torch.float16):
        return [SDPBackend.MATH]
    return _ALL_SDPA_BACKENDS


class LocallyGroupedAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows.

    Windows are batched and run through
    :func:`torch.nn.functional.scaled_dot_product_attention`. The code has
    no Python branch on the map size: padding amounts, the crop and the key
    mask (a few bytes per window) are computed from the size, so one traced
    graph (``torch.compile`` with dynamic shapes, ``torch.export``/ONNX with
    dynamic height and width) is right for every size, padded or not.

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

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, pad_mode={self.pad_mode!r}'

    def _key_mask(self, b: int, h: int, w: int,
                  device: torch.device) -> Optional[torch.Tensor]:
        """Boolean (B * windows, 1, 1, ws*ws) key mask, True for keys that
        real tokens may attend to, or None when the pad mode never masks.

        Built from tensor comparisons rather than Python conditions on
        ``h``/``w``, so a graph traced at one size stays right at others.
        """
        if self.pad_mode == 'zero':
            return None
        ws = self.window_size
        nh, nw = (h + ws - 1) // ws, (w + ws - 1) // ws
        rows = torch.arange(nh * ws, device=device) < h
        cols = torch.arange(nw * ws, device=device) < w
        keep = rows.view(nh, 1, ws, 1) & cols.view(1, nw, 1, ws)
        if self.pad_mode == 'mmseg':
            # mmseg masks only when both sides are padded (module doc).
            both_padded = (~rows).any() & (~cols).any()
            keep = keep | ~both_padded
        return keep.view(nh * nw, 1, 1, ws * ws).repeat(b, 1, 1, 1)

    def _window_index(self, b: int, nh: int, nw: int,
                      device: torch.device) -> torch.Tensor:
        """For each token of every window (window-major: batch, window row,
        window column, row in window, column in window), its row in the
        padded (B * nh*ws * nw*ws) token grid (int64)."""
        ws = self.window_size
        inner = torch.arange(ws, device=device)
        rows = torch.arange(nh, device=device)[:, None] * ws + inner
        cols = torch.arange(nw, device=device)[:, None] * ws + inner
        grid = rows[:, None, :, None] * (nw * ws) + cols[None, :, None, :]
        batch = torch.arange(b, device=device)[:, None] * (nh * nw * ws * ws)
        return (batch + grid.flatten()[None]).flatten()

    def _token_index(self, b: int, h: int, w: int,
                     device: torch.device) -> torch.Tensor:
        """For each real token (batch, row-major), its row among the
        window-major tokens of all windows (int64)."""
        ws = self.window_size
        nh, nw = (h + ws - 1) // ws, (w + ws - 1) // ws
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        window = (rows // ws * nw)[:, None] + (cols // ws)[None, :]
        inner = (rows % ws * ws)[:, None] + (cols % ws)[None, :]
        batch = torch.arange(b, device=device)[:, None] * (nh * nw * ws * ws)
        return (batch + (window * (ws * ws) + inner).flatten()[None]).flatten()

    def _windows(self, x: torch.Tensor,
                 hw_shape: Tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) tokens -> (B*windows, ws*ws, C), window-major, with
        zero tokens padded at the bottom/right (one ``C``-wide copy for the
        pad, one gather for the window order). Padded tokens' keys and
        values are the qkv bias; the pad mode decides whether real tokens
        see them."""
        b, _, c = x.shape
        h, w = hw_shape
        ws = self.window_size
        nh, nw = (h + ws - 1) // ws, (w + ws - 1) // ws
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, nw * ws - w, 0, nh * ws - h))
        index = self._window_index(b, nh, nw, x.device)
        return x.view(b * nh * ws * nw * ws, c).index_select(0, index).view(
            b * nh * nw, ws * ws, c)

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Attend within windows.

        Args:
            x (Tensor): Tokens of shape (B, H*W, C) in row-major order.
            hw_shape (tuple[int, int]): ``(H, W)`` of the token map.

        Returns:
            Tensor: Shape (B, H*W, C).
        """
        b, n, c = x.shape
        h, w = hw_shape
        ws, heads = self.window_size, self.num_heads
        nh, nw, d = (h + ws - 1) // ws, (w + ws - 1) // ws, c // heads
        qkv = self.qkv(self._windows(x, hw_shape))
        # q/k/v are (B*windows, heads, ws*ws, d) views of the qkv output;
        # 4-D inputs keep SDPA on its fused kernels.
        qkv = qkv.view(b * nh * nw, ws * ws, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        with sdpa_kernel(window_sdpa_backends(q)):
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=self._key_mask(b, h, w, x.device),
                dropout_p=self.attn_drop if self.training else 0.)
        # ``proj`` is per token, so applying it before dropping the padded
        # tokens changes nothing but a little work.
        out = self.proj(out.transpose(1, 2).reshape(b * nh * nw, ws * ws, c))
        out = self.proj_drop(out).view(b * nh * nw * ws * ws, c)
        # Back to row-major tokens without the padding: one gather.
        index = self._token_index(b, h, w, x.device)
        return out.index_select(0, index).view(b, n, c)
