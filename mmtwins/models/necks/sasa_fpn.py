"""FPN whose 3x3 convs are SASA attention layers (SASA Table 2).

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909, §4.2 (no official code was released).
"""
from typing import List, Union

from mmdet.models.necks import FPN
from torch import nn

from mmtwins.registry import MODELS

from ..layers.sasa_module import SASAModule


@MODELS.register_module()
class SASAFPN(FPN):
    """MMDetection's FPN with attention instead of its 3x3 convs.

    The output convs of every level and the strided convs that make the
    extra levels become :class:`~mmtwins.models.layers.SASAttention`
    layers of width ``out_channels`` (SASA §4.2 uses 256, k=7, 8 heads); a
    strided conv becomes attention followed by 2x2 average pooling. The 1x1
    lateral convs, the top-down path and the extra-level sources
    (``add_extra_convs``, ``relu_before_extra_convs``) are FPN's. A
    ``norm_cfg``/``act_cfg`` applies after each attention layer as it did
    after each conv.

    Args:
        in_channels (list[int]): Channels of the backbone levels.
        out_channels (int): Width of every output level.
        num_outs (int): Number of output levels.
        start_level (int): First backbone level used. Defaults to 0.
        end_level (int): Last backbone level used, -1 for the last.
            Defaults to -1.
        add_extra_convs (bool or str): Source of the extra levels, as in
            FPN. Defaults to False.
        kernel_size (int): Attention window. Defaults to 7.
        num_heads (int): Attention heads. Defaults to 8.
        **kwargs: Other ``FPN`` arguments (``relu_before_extra_convs``,
            ``no_norm_on_lateral``, ``conv_cfg`` for the lateral convs,
            ``norm_cfg``, ``act_cfg``, ``upsample_cfg``, ``init_cfg``).

    Examples:
        >>> import torch
        >>> neck = SASAFPN([16, 32], 32, 3, add_extra_convs='on_input',
        ...                kernel_size=3, num_heads=4)
        >>> feats = (torch.rand(1, 16, 16, 16), torch.rand(1, 32, 8, 8))
        >>> [tuple(o.shape) for o in neck(feats)]
        [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4)]
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, num_outs, start_level,
                         end_level, add_extra_convs, **kwargs)
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        # FPN builds its output and extra-level convs; swap each for an
        # attention module of the same channels and stride.
        self.fpn_convs = nn.ModuleList(
            SASAModule(
                module.conv.in_channels,
                module.conv.out_channels,
                kernel_size,
                num_heads,
                stride=module.conv.stride[0],
                norm_cfg=kwargs.get('norm_cfg'),
                act_cfg=kwargs.get('act_cfg')) for module in self.fpn_convs)
