"""The pre-norm transformer block shared by Twins-PCPVT and Twins-SVT.

Twins (arXiv 2104.13840, official code https://github.com/Meituan-AutoML/Twins,
Apache-2.0): ``x + drop_path(attn(norm1(x)))`` then
``x + drop_path(mlp(norm2(x)))``, where ``attn`` is GSA or LSA. Drop path is
applied once per branch, as in the official code (mmseg and mmpretrain apply
it twice). Names (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
are the official/timm ones.
"""
from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath

from .gsa import GlobalSubsampledAttention
from .lsa import LocallyGroupedAttention


class Mlp(nn.Module):
    """Two-layer GELU MLP with dropout (names ``fc1``/``fc2``).

    Args:
        embed_dims (int): Input and output width.
        hidden_dims (int): Hidden width.
        drop (float): Dropout after each layer. Defaults to 0.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``drop(fc2(drop(act(fc1(x)))))``."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TwinsBlock(nn.Module):
    """One Twins encoder block with GSA (``window_size=1``) or LSA.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): MLP hidden width over ``embed_dims``.
        sr_ratio (int): GSA key/value sub-sampling ratio. Defaults to 1.
        window_size (int): LSA window; 1 selects GSA. Defaults to 1.
        lsa_pad (str): LSA padding mode, see
            :class:`LocallyGroupedAttention`. Defaults to ``'mask'``.
        qkv_bias (bool): Bias in the query/key/value projections. Defaults
            to True.
        drop (float): Dropout after the projections. Defaults to 0.
        attn_drop (float): Dropout on attention probabilities. Defaults
            to 0.
        drop_path (float): Stochastic depth probability. Defaults to 0.
        norm_eps (float): Epsilon of ``norm1``/``norm2`` (official 1e-6).
            Defaults to 1e-6.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 sr_ratio: int = 1,
                 window_size: int = 1,
                 lsa_pad: str = 'mask',
                 qkv_bias: bool = True,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        if window_size > 1:
            self.attn = LocallyGroupedAttention(
                embed_dims, num_heads, window_size, lsa_pad, qkv_bias,
                attn_drop, drop)
        else:
            self.attn = GlobalSubsampledAttention(
                embed_dims, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else (
            nn.Identity())
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop)

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return x + self.drop_path(self.mlp(self.norm2(x)))
