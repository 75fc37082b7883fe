"""Positional encoding generator (PEG) of CPVT, as used by Twins.

Conditional position encoding (Chu et al., arXiv 2102.10882) as placed by
Twins (arXiv 2104.13840): a depthwise 3x3 convolution with a residual
connection, applied to the token map after the first block of every stage.
The module and parameter names (``proj.0``) match the official ``PosCNN`` and
timm's ``PosConv`` so their checkpoints load unchanged.
"""
from typing import Tuple

import torch
import torch.nn as nn


class PositionEncodingGenerator(nn.Module):
    """Depthwise 3x3 conv with a residual on a (B, H*W, C) token map.

    Args:
        embed_dims (int): Token width ``C``.

    Examples:
        >>> peg = PositionEncodingGenerator(64)
        >>> peg(torch.rand(2, 12 * 10, 64), (12, 10)).shape
        torch.Size([2, 120, 64])
    """

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(
                embed_dims,
                embed_dims,
                kernel_size=3,
                padding=1,
                groups=embed_dims))

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        # The token layout is channels-last NCHW: a view, no copy.
        x_map = x.transpose(1, 2).view(b, c, *hw_shape)
        out = self.proj(x_map) + x_map
        return out.flatten(2).transpose(1, 2)
