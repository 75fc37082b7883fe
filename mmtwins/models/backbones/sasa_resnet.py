"""SASA-ResNet: ResNet with stand-alone self-attention in the bottlenecks.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models",
NeurIPS 2019, arXiv 1906.05909, §4.1 and §4.3 (no official code was
released). Built on MMDetection's ``ResNet``, whose stages, 1x1 convs,
residual paths, freezing and ``norm_eval`` it keeps.
"""
from typing import Optional, Sequence, Tuple, Union

from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from torch import Tensor, nn

from mmtwins.registry import MODELS

from ..layers.sasa_attention import SASAttention, check_input
from ..layers.sasa_stem import SASAStem


class SASABottleneck(Bottleneck):
    """A ResNet bottleneck whose 3x3 conv is a SASA attention layer.

    Only the spatial conv ``conv2`` changes (SASA §4.1); a stride-2 block
    attends at the input resolution and then average-pools 2x2 with stride
    2, the residual keeps ResNet's strided 1x1 projection. With
    ``attention=False`` this is MMDetection's ``Bottleneck``.

    Args:
        *args: Positional arguments of ``Bottleneck``.
        attention (bool): Replace the 3x3 conv by attention. Defaults to
            True.
        kernel_size (int): Attention window. Defaults to 7.
        num_heads (int): Attention heads. Defaults to 8.
        **kwargs: Keyword arguments of ``Bottleneck``.
    """

    def __init__(self,
                 *args,
                 attention: bool = True,
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attention = attention
        if not attention:
            return
        if self.with_dcn or self.dilation != 1 or self.style != 'pytorch':
            raise ValueError(
                'SASABottleneck: attention blocks support neither dcn, '
                'dilation nor the caffe style; got '
                f'dcn={self.dcn}, dilation={self.dilation}, '
                f'style={self.style!r}')
        self.conv2 = SASAttention(
            self.planes,
            self.planes,
            kernel_size=kernel_size,
            num_heads=num_heads,
            stride=self.conv2_stride)


@MODELS.register_module()
class SASAResNet(ResNet):
    """ResNet-26/38/50 with stand-alone self-attention (SASA Table 1).

    Every bottleneck's 3x3 conv of the stages chosen by ``attention_stages``
    becomes :class:`~mmtwins.models.layers.SASAttention` (k x k window,
    ``num_heads`` heads; SASA Table 3 varies the stages). ResNet-26 and
    ResNet-38 drop blocks from each stage of ResNet-50: ``(1, 2, 4, 1)`` and
    ``(2, 3, 5, 2)``. ``stem='conv'`` keeps the 7x7 conv stem ("conv-stem +
    attention"), ``stem='attention'`` uses :class:`SASAStem` ("full
    attention"). With a 1000-class fc head the models have 10.3M / 14.1M /
    18.0M parameters, as in the paper.

    Args:
        depth (int): 26, 38 or 50.
        in_channels (int): Image channels. Defaults to 3.
        stem (str): ``'conv'`` or ``'attention'``. Defaults to ``'conv'``.
        attention_stages (Sequence[bool]): Per stage, whether its
            bottlenecks use attention (otherwise 3x3 convs). Defaults to
            ``(True, True, True, True)``.
        kernel_size (int): Attention window of the bottlenecks. Defaults
            to 7.
        num_heads (int): Heads of the bottleneck attention. Defaults to 8.
        out_indices (int | Sequence[int]): Stages to output; an int is one
            stage (the output is still a tuple). Defaults to
            ``(0, 1, 2, 3)``.
        frozen_stages (int): Stages to freeze (the stem with stage 0);
            -1 freezes nothing. Defaults to -1.
        norm_cfg (dict): Norm layers. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep BatchNorm in eval mode while training.
            Defaults to True.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        base_channels (int): Width of the first stage's bottleneck (the
            stages use 1, 2, 4 and 8 times it; the stem has this width).
            Defaults to 64.
        zero_init_residual (bool): Start each block's last norm at zero,
            as MMDetection's ResNet does. Defaults to True.
        init_cfg (dict or list[dict], optional): Initialisation; None means
            MMDetection's ResNet default (Kaiming convs, unit norms).
            Defaults to None.

    Examples:
        >>> import torch
        >>> model = SASAResNet(26, base_channels=16, kernel_size=3)
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    """

    arch_settings = {
        26: (SASABottleneck, (1, 2, 4, 1)),
        38: (SASABottleneck, (2, 3, 5, 2)),
        50: (SASABottleneck, (3, 4, 6, 3)),
    }
    stem_types = ('conv', 'attention')

    def __init__(self,
                 depth: int = 50,
                 in_channels: int = 3,
                 stem: str = 'conv',
                 attention_stages: Sequence[bool] = (True, True, True, True),
                 kernel_size: int = 7,
                 num_heads: int = 8,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = True,
                 with_cp: bool = False,
                 base_channels: int = 64,
                 zero_init_residual: bool = True,
                 init_cfg=None) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'SASAResNet: depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        if stem not in self.stem_types:
            raise ValueError(f'SASAResNet: stem must be one of '
                             f'{self.stem_types}, got {stem!r}')
        if isinstance(out_indices, int) and not isinstance(out_indices,
                                                           bool):
            out_indices = (out_indices, )
        attention_stages = tuple(attention_stages)
        if len(attention_stages) != 4 or not all(
                isinstance(flag, bool) for flag in attention_stages):
            raise ValueError('SASAResNet: attention_stages needs 4 bools, '
                             f'got {attention_stages!r}')
        if (isinstance(out_indices, (str, bytes, bool))
                or not isinstance(out_indices, Sequence) or not out_indices
                or not all(isinstance(index, int)
                           and not isinstance(index, bool)
                           and index in range(4) for index in out_indices)):
            raise ValueError('SASAResNet: out_indices must be stage indices '
                             f'in 0..3 (an int or a sequence), got '
                             f'{out_indices!r}')
        if frozen_stages not in range(-1, 5):
            raise ValueError('SASAResNet: frozen_stages must be in -1..4, '
                             f'got {frozen_stages!r}')
        self.stem_type = stem
        self.image_channels = in_channels
        self.attention_stages = attention_stages
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        self._default_init = init_cfg is None
        super().__init__(
            depth,
            in_channels=in_channels,
            base_channels=base_channels,
            out_indices=tuple(out_indices),
            # The attention stem is one module, ``self.stem``, which is
            # what ResNet's forward and freezing expect when deep_stem=True.
            deep_stem=stem == 'attention',
            frozen_stages=frozen_stages,
            norm_cfg=norm_cfg or dict(type='BN', requires_grad=True),
            norm_eval=norm_eval,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            init_cfg=init_cfg)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        """Build the conv stem (ResNet's) or the attention stem."""
        if self.stem_type == 'conv':
            super()._make_stem_layer(in_channels, stem_channels)
            return
        self.stem = SASAStem(
            in_channels, stem_channels, norm_cfg=self.norm_cfg)
        # SASAStem pools itself; ResNet's forward still calls maxpool.
        self.maxpool = nn.Identity()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Stage outputs of ``out_indices`` for images ``(B, C, H, W)``.

        As ResNet's forward, after a one-line check of the input's shape
        and dtype (an empty batch gives empty outputs).
        """
        weight = (self.stem.query_conv.weight
                  if self.deep_stem else self.conv1.weight)
        check_input(self, x, self.image_channels, weight)
        return super().forward(x)

    def train(self, mode: bool = True) -> 'SASAResNet':
        """As mmdet's ResNet (frozen stages, ``norm_eval``), returning the
        module like :meth:`torch.nn.Module.train` (mmdet's returns None,
        so ``SASAResNet(...).eval()`` gave None)."""
        super().train(mode)
        return self

    def make_res_layer(self, **kwargs) -> ResLayer:
        """Build one stage, with attention where ``attention_stages`` says.
        """
        stage = len(self.res_layers)  # ResNet appends after each call
        kwargs.update(
            attention=self.attention_stages[stage],
            kernel_size=self.kernel_size,
            num_heads=self.num_heads)
        if self._default_init and self.zero_init_residual:
            # ResNet only sets this for its own Bottleneck class.
            kwargs['init_cfg'] = dict(
                type='Constant', val=0, override=dict(name='norm3'))
        return ResLayer(**kwargs)

