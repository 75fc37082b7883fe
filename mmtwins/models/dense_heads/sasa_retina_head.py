"""RetinaNet head whose 3x3 convs are SASA attention layers (Table 2).

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909, §4.2 (no official code was released).
"""
from typing import Tuple

from mmdet.models.dense_heads import RetinaHead
from torch import Tensor, nn

from mmtwins.registry import MODELS

from ..layers.sasa_module import SASAModule


@MODELS.register_module()
class SASARetinaHead(RetinaHead):
    """RetinaNet head built from attention layers (SASA §4.2).

    Every 3x3 conv of MMDetection's ``RetinaHead`` becomes a
    :class:`~mmtwins.models.layers.SASAttention` layer of width
    ``feat_channels`` (k=7, 8 heads in the paper), shared across the FPN
    levels like the convs were:

    - the ``stacked_convs`` tower layers of each branch: attention, then
      the optional norm and ReLU, as ``ConvModule`` did;
    - the 3x3 prediction convs: attention (``cls_attn``/``reg_attn``)
      followed by the extra pointwise conv that mixes the heads and makes
      the predictions (``retina_cls``/``retina_reg``, 1x1). An attention
      layer cannot itself output ``9 * 4`` box channels with 8 heads, and
      its heads would otherwise never be mixed.

    Initialisation follows RetinaNet: every Conv2d, so every query, key and
    value projection, starts from N(0, 0.01^2) (SASA initialises the value
    projections of these heads this way), and ``retina_cls`` gets the prior
    bias. With such small query/key weights the attention starts near
    uniform over the window.

    Args:
        num_classes (int): Object classes.
        in_channels (int): Channels of the FPN levels.
        stacked_convs (int): Attention layers in each tower. Defaults to 4.
        feat_channels (int): Width of the attention layers. Defaults to 256.
        kernel_size (int): Attention window. Defaults to 7.
        num_heads (int): Attention heads. Defaults to 8.
        **kwargs: Other ``RetinaHead`` arguments (``norm_cfg``,
            ``anchor_generator``, ``bbox_coder``, losses, ``train_cfg``,
            ``test_cfg``, ``init_cfg``). ``conv_cfg`` must stay None: the
            head has no spatial convs.

    Examples:
        >>> import torch
        >>> head = SASARetinaHead(3, 32, stacked_convs=1, feat_channels=32,
        ...                       kernel_size=3, num_heads=4)
        >>> cls_score, bbox_pred = head.forward_single(torch.rand(1, 32, 8,
        ...                                                      8))
        >>> tuple(cls_score.shape), tuple(bbox_pred.shape)
        ((1, 27, 8, 8), (1, 36, 8, 8))
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 stacked_convs: int = 4,
                 feat_channels: int = 256,
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 **kwargs) -> None:
        if kwargs.get('conv_cfg') is not None:
            raise ValueError(
                'SASARetinaHead has no spatial convs to apply conv_cfg='
                f'{kwargs["conv_cfg"]!r} to; leave it None')
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        super().__init__(
            num_classes,
            in_channels,
            stacked_convs=stacked_convs,
            feat_channels=feat_channels,
            **kwargs)

    def _attention(self, in_channels: int, with_act: bool) -> SASAModule:
        return SASAModule(
            in_channels,
            self.feat_channels,
            self.kernel_size,
            self.num_heads,
            norm_cfg=self.norm_cfg if with_act else None,
            act_cfg=dict(type='ReLU') if with_act else None)

    def _init_layers(self) -> None:
        """Build the attention towers and the pointwise predictors."""
        self.relu = nn.ReLU(inplace=True)
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        in_channels = self.in_channels
        for _ in range(self.stacked_convs):
            self.cls_convs.append(self._attention(in_channels, True))
            self.reg_convs.append(self._attention(in_channels, True))
            in_channels = self.feat_channels
        self.cls_attn = self._attention(in_channels, False)
        self.reg_attn = self._attention(in_channels, False)
        self.retina_cls = nn.Conv2d(
            self.feat_channels, self.num_base_priors * self.cls_out_channels,
            1)
        self.retina_reg = nn.Conv2d(
            self.feat_channels,
            self.num_base_priors * self.bbox_coder.encode_size, 1)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Scores and box deltas of one FPN level.

        Args:
            x (Tensor): ``(B, in_channels, H, W)``.

        Returns:
            tuple[Tensor, Tensor]: ``(B, A * num_classes, H, W)`` scores and
            ``(B, A * 4, H, W)`` box deltas (A anchors per position).
        """
        cls_feat = x
        reg_feat = x
        for cls_conv in self.cls_convs:
            cls_feat = cls_conv(cls_feat)
        for reg_conv in self.reg_convs:
            reg_feat = reg_conv(reg_feat)
        cls_score = self.retina_cls(self.cls_attn(cls_feat))
        bbox_pred = self.retina_reg(self.reg_attn(reg_feat))
        return cls_score, bbox_pred
