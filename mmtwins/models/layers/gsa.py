"""Global sub-sampled attention (GSA) of Twins.

Twins (Chu et al., NeurIPS 2021, arXiv 2104.13840, official code
https://github.com/Meituan-AutoML/Twins, Apache-2.0) uses PVT's spatial
reduction attention in PCPVT and in every odd block of SVT: keys and values
come from the token map sub-sampled by a strided convolution (kernel = stride
= ``sr_ratio``) followed by a LayerNorm, so every stage attends to the same
number of keys.

Parameter names follow the official and timm checkpoints: ``q``, ``kv``
(rows ``0:C`` are keys, ``C:2C`` values), ``proj``, and for ``sr_ratio > 1``
``sr`` and ``norm``. The attention itself runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, which never
materialises the attention matrix when a fused kernel is available.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class GlobalSubsampledAttention(nn.Module):
    """Multi-head attention over a spatially sub-sampled key/value map.

    Args:
        embed_dims (int): Token width ``C``.
        num_heads (int): Number of attention heads; must divide ``C``.
        sr_ratio (int): Sub-sampling ratio of keys and values. With 1 the
            layer is plain global attention and has no ``sr``/``norm``.
            Defaults to 1.
        qkv_bias (bool): Whether ``q`` and ``kv`` have a bias. Defaults to
            True.
        attn_drop (float): Dropout on attention probabilities. Defaults to 0.
        proj_drop (float): Dropout after the output projection. Defaults
            to 0.
        sr_norm_eps (float): Epsilon of the LayerNorm after the sub-sampling
            conv (the official code hard-codes PyTorch's 1e-5). Defaults to
            1e-5.

    Examples:
        >>> attn = GlobalSubsampledAttention(64, num_heads=1, sr_ratio=8)
        >>> attn(torch.rand(2, 56 * 56, 64), (56, 56)).shape
        torch.Size([2, 3136, 64])
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 sr_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=sr_norm_eps)

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Attend from every token to the sub-sampled map.

        Args:
            x (Tensor): Tokens of shape (B, H*W, C) in row-major order.
            hw_shape (tuple[int, int]): ``(H, W)`` of the token map.

        Returns:
            Tensor: Shape (B, H*W, C).
        """
        b, n, c = x.shape
        heads = self.num_heads
        x_kv = x
        if self.sr_ratio > 1:
            # (B, N, C) viewed as NCHW is a channels-last tensor: no copy.
            x_map = x.transpose(1, 2).reshape(b, c, *hw_shape)
            x_kv = self.norm(self.sr(x_map).flatten(2).transpose(1, 2))
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)
        m = x_kv.shape[1]  # explicit: -1 is ambiguous for an empty batch
        k, v = self.kv(x_kv).view(b, m, 2, heads,
                                  c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))
