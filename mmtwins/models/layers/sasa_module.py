"""Attention, norm and activation: the SASA counterpart of ``ConvModule``.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909. SASA's detection models replace every 3x3
conv of the FPN and the RetinaNet heads by an attention layer; MMDetection
builds those convs as mmcv ``ConvModule`` (conv, then optional norm and
activation), so this module keeps the same order and configs.
"""
from typing import Optional

from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import Tensor, nn

from mmtwins.registry import MODELS

from .sasa_attention import SASAttention


@MODELS.register_module()
class SASAModule(nn.Module):
    """:class:`SASAttention`, then an optional norm and activation.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Attention window. Defaults to 7.
        num_heads (int): Attention heads. Defaults to 8.
        stride (int): 1, or 2 for attention then 2x2 average pooling.
            Defaults to 1.
        norm_cfg (dict, optional): Norm layer after the attention.
            Defaults to None.
        act_cfg (dict, optional): Activation after the norm. Defaults to
            None.

    Examples:
        >>> import torch
        >>> module = SASAModule(32, 32, 3, 4, act_cfg=dict(type='ReLU'))
        >>> module(torch.rand(1, 32, 10, 10)).shape
        torch.Size([1, 32, 10, 10])
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 stride: int = 1,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.attn = SASAttention(in_channels, out_channels, kernel_size,
                                 num_heads, stride)
        self.norm = (build_norm_layer(norm_cfg, out_channels)[1]
                     if norm_cfg is not None else None)
        self.activate = (build_activation_layer(act_cfg)
                         if act_cfg is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activate is not None:
            x = self.activate(x)
        return x
