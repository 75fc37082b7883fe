"""Twins-PCPVT and Twins-SVT backbones for dense prediction.

Twins: Revisiting the Design of Spatial Attention in Vision Transformers
(Chu et al., NeurIPS 2021, https://arxiv.org/abs/2104.13840); official code
https://github.com/Meituan-AutoML/Twins (Apache-2.0).

Both backbones share one implementation: four stages, each a strided patch
embedding (Conv2d with kernel = stride, then LayerNorm), a stack of pre-norm
blocks and a positional encoding generator (PEG) after the first block.
PCPVT uses global sub-sampled attention (GSA) in every block; SVT alternates
locally-grouped attention (LSA, even blocks) and GSA (odd blocks). SVT adds a
LayerNorm on each stage output (``norm_list``) as the official dense code
does.

Module names are those of the official and timm ImageNet checkpoints, so such
a checkpoint loads without conversion (see :mod:`mmtwins.utils.ckpt_convert`
for mmseg and mmpretrain checkpoints). The backbone holds no classification
``norm``/``head``: every parameter is used by ``forward``.

Spatial sizes: each patch embedding floors, like the official code, so a
side of ``s`` pixels gives ``s // 4``, then ``// 2`` three times (e.g. 683 ->
170 -> 85 -> 42 -> 21); ``patch_rounding='ceil'`` zero-pads the bottom/right
first, as mmseg does (683 -> 171 -> 86 -> 43 -> 22). Inputs must be at least
32 pixels per side; an empty batch (0 images) gives empty maps of the right
shape.

Input dtype: the input must have the weights' dtype (a float64 or float16
image for an fp32 model is refused with one line saying what to cast), except
under ``torch.autocast``, which casts per operation (e.g. bf16 on CPU, fp16
or bf16 on CUDA).

One forward path, plain PyTorch and SDPA with no Python branch on sizes:
``torch.compile`` traces it without graph breaks (eval and training) and
``torch.export``/ONNX export it with dynamic height and width.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import (
    constant_init,
    normal_init,
    trunc_normal_init,
)
from torch.nn.modules.batchnorm import _BatchNorm

from mmtwins.registry import MODELS

from ..layers.lsa import LSA_PAD_MODES
from ..layers.peg import PositionEncodingGenerator
from ..layers.twins_block import TwinsBlock

MIN_INPUT_SIZE = 32

_PCPVT_COMMON = dict(
    embed_dims=[64, 128, 320, 512],
    num_heads=[1, 2, 5, 8],
    mlp_ratios=[8, 8, 4, 4],
    sr_ratios=[8, 4, 2, 1])
_SVT_COMMON = dict(
    mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7] * 4)

# Ops whose outputs selective checkpointing keeps: the expensive ones. The
# rest (LayerNorm, GELU, padding, gathers, additions) is recomputed.
_SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.convolution.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def _selective_policy(ctx, op, *args, **kwargs) -> cp.CheckpointPolicy:
    if op in _SAVED_OPS:
        return cp.CheckpointPolicy.MUST_SAVE
    return cp.CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    """Context managers of ``with_cp='selective'`` (see TwinsBackbone)."""
    return cp.create_selective_checkpoint_contexts(_selective_policy)


def _type_name(value) -> str:
    return type(value).__name__


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    """``value`` is one of the strings ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f'{name} must be a str, one of {list(choices)}; got '
                        f'{value!r} ({_type_name(value)})')
    if value not in choices:
        raise ValueError(f'unknown {name} {value!r}; choose one of '
                         f'{list(choices)}')


def _check_int(name: str, value, low: int) -> None:
    """``value`` is an int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {value!r} '
                        f'({_type_name(value)})')
    if value < low:
        raise ValueError(f'{name} must be >= {low}, got {value}')


def _check_float(name: str, value, low: float, high: float,
                 low_open: bool = False, high_open: bool = False) -> None:
    """``value`` is a real number in the interval from ``low`` to ``high``
    (open on the flagged sides)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number, got {value!r} '
                        f'({_type_name(value)})')
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value:  # value != value: NaN
        interval = (f"{'(' if low_open else '['}{low}, {high}"
                    f"{')' if high_open else ']'}")
        raise ValueError(f'{name} must be in {interval}, got {value}')


def _check_out_indices(out_indices, num_stages: int) -> List[int]:
    """``out_indices`` as a list of stage indices in ``[0, num_stages)``
    (an int is one index; negative ones count from the end)."""
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = [out_indices]
    if isinstance(out_indices, (str, bytes)) or not isinstance(
            out_indices, Sequence) or not all(
                isinstance(i, int) and not isinstance(i, bool)
                for i in out_indices):
        raise TypeError(f'out_indices must be an int or a sequence of ints, '
                        f'got {out_indices!r}')
    resolved = [i + num_stages if i < 0 else i for i in out_indices]
    if not resolved or any(not 0 <= i < num_stages for i in resolved):
        raise ValueError(f'out_indices must be stage indices in '
                         f'[-{num_stages}, {num_stages}), got '
                         f'{list(out_indices)}')
    if len(set(resolved)) != len(resolved):
        raise ValueError(f'out_indices names a stage twice: '
                         f'{list(out_indices)}')
    return resolved


class PatchEmbed(nn.Module):
    """Strided patch embedding: Conv2d (kernel = stride) then LayerNorm.

    Args:
        in_channels (int): Input channels.
        embed_dims (int): Output width.
        patch_size (int): Kernel size and stride.
        rounding (str): ``'floor'`` drops trailing pixels (official, timm);
            ``'ceil'`` zero-pads bottom/right to a multiple of the stride
            first (mmseg's ``corner`` padding).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 rounding: str) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.rounding = rounding
        self.proj = nn.Conv2d(
            in_channels, embed_dims, kernel_size=patch_size,
            stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims)  # official: PyTorch eps 1e-5

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, tuple]:
        if self.rounding == 'ceil':
            # Pad amounts are computed, not branched on (a zero pad is a
            # no-op), so traced graphs stay right at every input size.
            p = self.patch_size
            x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0,
                          (p - x.shape[2] % p) % p))
        x = self.proj(x)
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape


class TwinsBackbone(BaseModule):
    """The implementation shared by :class:`TwinsPCPVT` and :class:`TwinsSVT`.

    Stages after the last of ``out_indices`` are not built, so every
    parameter takes part in ``forward`` (DDP needs no
    ``find_unused_parameters``).

    Args:
        arch (str | dict): ``'small'``, ``'base'``, ``'large'`` (or ``'s'``,
            ``'b'``, ``'l'``), or a dict with ``embed_dims``, ``depths``,
            ``num_heads``, ``mlp_ratios``, ``sr_ratios`` (four entries each;
            SVT also ``window_sizes``). Defaults to ``'small'``.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Stages whose maps are returned
            (negative indices count from the end). Defaults to
            (0, 1, 2, 3).
        qkv_bias (bool): Bias in query/key/value projections. Defaults to
            True.
        drop_rate (float): Dropout after projections and MLP layers.
            Defaults to 0.
        attn_drop_rate (float): Dropout on attention probabilities.
            Defaults to 0.
        drop_path_rate (float): Final stochastic-depth rate; block ``k`` of
            all ``K`` blocks uses ``rate * k / (K - 1)``, once per residual
            branch. Defaults to 0.
        norm_after_stage (bool): Add a LayerNorm on each stage output
            (``norm_list``). Defaults to False.
        norm_eps (float): Epsilon of the block and ``norm_list`` LayerNorms:
            1e-6 as the official code; mmseg builds them with 1e-5. The
            patch-embedding and GSA sub-sampling norms always use 1e-5, as
            everywhere. Defaults to 1e-6.
        patch_rounding (str): ``'floor'`` (official) or ``'ceil'`` (mmseg),
            see the module docstring. Defaults to ``'floor'``.
        frozen_stages (int): Stages ``0..frozen_stages`` are frozen
            (eval mode, no gradients); -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep normalisation layers that track running
            statistics (BatchNorm) in eval mode while training. The standard
            Twins blocks only hold LayerNorm, which has no statistics, so
            this only matters for customised variants. Defaults to False.
        with_cp (bool | str): Activation checkpointing per block. True
            stores only each block's input and recomputes the whole block
            in backward (least memory, about a third more compute);
            ``'selective'`` keeps the outputs of the matrix products,
            attention and convolutions and recomputes only the cheap
            element-wise results (LayerNorm, GELU, padding, window
            gathers): much of the saving, but in eager mode on a CPU the
            recomputed GELU is not cheap (steps about 15% slower than
            plain). Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=...)`` loads an official/timm ImageNet checkpoint
            strictly (also mmseg/mmpretrain ones, converted on the fly); the
            classifier ``head.*`` and final ``norm.*`` are dropped and
            logged. Defaults to None (official initialisation).
        lsa_pad (str): LSA padding mode (SVT only), see :class:`TwinsSVT`.
            Defaults to ``'mask'``.

    Which training mode: on a CPU at 512x512 (docs/en/benchmarks.md) plain
    eager is the fastest (about 1.2x mmseg eager, with page faults out of
    the measure) at 0.8x mmseg's training peak; compiled training with the
    compiler's activation memory budget (``tools/train.py --compile
    --memory-budget 0.7``, see
    :func:`mmtwins.utils.activation_memory_budget`) has about half mmseg's
    peak (0.49x/0.54x for PCPVT-S/SVT-S) at about the compiled speed but
    compiles once per input size; ``with_cp='selective'`` is the eager way
    to about 0.55x at a slower step, and ``with_cp=True`` the least memory
    (0.2x) at the most compute.
    """

    arch_zoo: Dict[str, dict] = {}
    arch_keys: Tuple[str, ...] = ('embed_dims', 'depths', 'num_heads',
                                  'mlp_ratios', 'sr_ratios')

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_after_stage: bool = False,
                 norm_eps: float = 1e-6,
                 patch_rounding: str = 'floor',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: Union[bool, str] = False,
                 init_cfg: Optional[dict] = None,
                 lsa_pad: str = 'mask') -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch = self._parse_arch(arch)
        num_stages = len(self.arch['depths'])
        out_indices = _check_out_indices(out_indices, num_stages)
        _check_choice('patch_rounding', patch_rounding, ('floor', 'ceil'))
        _check_choice('lsa_pad', lsa_pad, LSA_PAD_MODES)
        _check_int('in_channels', in_channels, 1)
        _check_int('frozen_stages', frozen_stages, -1)
        if frozen_stages > max(out_indices):
            raise ValueError(f'frozen_stages must be in [-1, '
                             f'{max(out_indices)}] (the last output stage), '
                             f'got {frozen_stages}')
        for name, value in (('drop_rate', drop_rate),
                            ('attn_drop_rate', attn_drop_rate),
                            ('drop_path_rate', drop_path_rate)):
            _check_float(name, value, 0., 1., high_open=True)
        _check_float('norm_eps', norm_eps, 0., 1., low_open=True)
        if with_cp not in (False, True, 'selective'):
            raise ValueError(f"with_cp must be True, False or 'selective', "
                             f'got {with_cp!r}')
        self.in_channels = in_channels
        self.out_indices = tuple(sorted(out_indices))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.lsa_pad = lsa_pad

        arch = self.arch
        dims = arch['embed_dims']
        windows = arch.get('window_sizes', [1] * num_stages)
        total = sum(arch['depths'])
        dpr = torch.linspace(0, drop_path_rate, total).tolist()
        self.patch_embeds = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.pos_block = nn.ModuleList()
        self.num_stages = num_stages
        self.num_built = self.out_indices[-1] + 1
        cur = 0
        for i in range(self.num_built):
            self.patch_embeds.append(
                PatchEmbed(in_channels if i == 0 else dims[i - 1], dims[i],
                           4 if i == 0 else 2, patch_rounding))
            self.blocks.append(nn.ModuleList([
                TwinsBlock(
                    dims[i],
                    arch['num_heads'][i],
                    arch['mlp_ratios'][i],
                    sr_ratio=arch['sr_ratios'][i],
                    # LSA on even blocks when the stage has a window.
                    window_size=windows[i] if j % 2 == 0 else 1,
                    lsa_pad=lsa_pad,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[cur + j],
                    norm_eps=norm_eps) for j in range(arch['depths'][i])
            ]))
            self.pos_block.append(PositionEncodingGenerator(dims[i]))
            cur += arch['depths'][i]
        self.norm_after_stage = norm_after_stage
        if norm_after_stage:
            self.norm_list = nn.ModuleList([
                nn.LayerNorm(d, eps=norm_eps) for d in dims[:self.num_built]
            ])
        self.out_channels = [dims[i] for i in self.out_indices]
        # Token maps viewed as NCHW have channels-last strides; with
        # channels-last conv weights the convolutions read and write that
        # layout directly instead of copying to and from NCHW.
        self.to(memory_format=torch.channels_last)
        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        """Resolve an arch alias or validate an arch dict."""
        if isinstance(arch, str):
            aliases = {k[0]: k for k in cls.arch_zoo}
            name = aliases.get(arch.lower(), arch.lower())
            if name not in cls.arch_zoo:
                choices = sorted([*cls.arch_zoo, *aliases])
                raise ValueError(f'unknown {cls.__name__} arch {arch!r}; '
                                 f'choose one of {choices} or pass a dict')
            return copy.deepcopy(cls.arch_zoo[name])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or dict, got {type(arch)}')
        missing = set(cls.arch_keys) - set(arch)
        if missing:
            raise ValueError(f'{cls.__name__} arch dict lacks keys '
                             f'{sorted(missing)}')
        extra = set(arch) - set(cls.arch_keys)
        if extra:
            raise ValueError(f'{cls.__name__} arch dict has unknown keys '
                             f'{sorted(extra)}')
        lengths = {k: len(arch[k]) for k in cls.arch_keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f'{cls.__name__} arch entries must have one '
                             f'length per stage, got {lengths}')
        for dim, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dim % heads:
                raise ValueError(f'embed_dims {dim} is not divisible by '
                                 f'num_heads {heads}')
        return copy.deepcopy(dict(arch))

    def init_weights(self) -> None:
        """Official initialisation, then the pretrained checkpoint if any."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, (nn.LayerNorm, _BatchNorm, nn.GroupNorm)):
                constant_init(m, val=1.0, bias=0.)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * (
                    m.out_channels // m.groups)
                normal_init(m, mean=0, std=(2.0 / fan_out)**0.5, bias=0.)
        init_cfg = self.init_cfg
        if init_cfg is None:
            return
        if init_cfg.get('type') != 'Pretrained':
            raise ValueError(f'{type(self).__name__} supports only '
                             f"init_cfg=dict(type='Pretrained', "
                             f'checkpoint=...), got {init_cfg}')
        from mmtwins.utils.pretrained import load_twins_pretrained
        load_twins_pretrained(self, init_cfg['checkpoint'],
                              MMLogger.get_current_instance())
        self._is_init = True

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages + 1):
            frozen = [self.patch_embeds[i], self.blocks[i], self.pos_block[i]]
            if self.norm_after_stage:
                frozen.append(self.norm_list[i])
            for module in frozen:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'TwinsBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects a 4-D NCHW '
                             f'tensor, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects '
                             f'{self.in_channels} input channels, got '
                             f'{x.shape[1]} (shape {tuple(x.shape)})')
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'{type(self).__name__} needs inputs of at '
                             f'least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} '
                             f'pixels, got {tuple(x.shape[2:])}')
        weight = self.patch_embeds[0].proj.weight
        if x.dtype != weight.dtype and not (
                x.is_floating_point()
                and torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f'{type(self).__name__} got a {x.dtype} input but '
                            f'its weights are {weight.dtype}: cast one to the '
                            f'other (e.g. x.to({weight.dtype})) or run under '
                            f'torch.autocast')

    def _run_block(self, block: nn.Module, x: torch.Tensor,
                   hw_shape: Tuple[int, int]) -> torch.Tensor:
        if self.with_cp == 'selective' and x.requires_grad:
            return cp.checkpoint(block, x, hw_shape, use_reentrant=False,
                                 context_fn=_selective_contexts)
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(block, x, hw_shape, use_reentrant=False)
        return block(x, hw_shape)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the NCHW maps of the stages in ``out_indices``."""
        self._check_input(x)
        outs: List[torch.Tensor] = []
        b = x.shape[0]
        for i, (embed, blocks) in enumerate(
                zip(self.patch_embeds, self.blocks)):
            x, hw_shape = embed(x)
            for j, block in enumerate(blocks):
                x = self._run_block(block, x, hw_shape)
                if j == 0:
                    x = self.pos_block[i](x, hw_shape)
            if self.norm_after_stage:
                x = self.norm_list[i](x)
            # Tokens viewed as NCHW (channels-last strides, no copy).
            x = x.view(b, *hw_shape, x.shape[-1]).permute(0, 3, 1, 2)
            if i in self.out_indices:
                outs.append(x.contiguous())
        return tuple(outs)


@MODELS.register_module()
class TwinsPCPVT(TwinsBackbone):
    """Twins-PCPVT backbone: PVT with conditional position encodings.

    Every block uses global sub-sampled attention. Arguments are those of
    :class:`TwinsBackbone` (PCPVT has no LSA, hence no ``lsa_pad``).

    Examples:
        >>> model = TwinsPCPVT('small')
        >>> [o.shape[1:] for o in model(torch.rand(1, 3, 64, 96))]
        [torch.Size([64, 16, 24]), torch.Size([128, 8, 12]),
         torch.Size([320, 4, 6]), torch.Size([512, 2, 3])]
    """

    arch_zoo: Dict[str, dict] = {
        'small': dict(depths=[3, 4, 6, 3], **_PCPVT_COMMON),
        'base': dict(depths=[3, 4, 18, 3], **_PCPVT_COMMON),
        'large': dict(depths=[3, 8, 27, 3], **_PCPVT_COMMON),
    }

    def __init__(self, arch: Union[str, dict] = 'small', **kwargs) -> None:
        if 'lsa_pad' in kwargs:
            raise TypeError('TwinsPCPVT has no LSA blocks; lsa_pad applies '
                            'to TwinsSVT only')
        super().__init__(arch, **kwargs)


@MODELS.register_module()
class TwinsSVT(TwinsBackbone):
    """Twins-SVT backbone: alternating locally-grouped and global attention.

    Even blocks of every stage use LSA in ``window_sizes`` windows, odd
    blocks GSA; stage outputs pass through ``norm_list`` as in the official
    dense code. Arguments are those of :class:`TwinsBackbone`, with:

    Args:
        lsa_pad (str): How LSA windows cover maps that are not a multiple of
            the window: ``'mask'`` (padded tokens masked out, default),
            ``'zero'`` (official detection code and timm: zero padding, no
            mask) or ``'mmseg'`` (official segmentation code and mmseg,
            whose mask vanishes when only one side is padded). See
            :mod:`mmtwins.models.layers.lsa`.
        norm_after_stage (bool): Defaults to True.

    Examples:
        >>> model = TwinsSVT('small', lsa_pad='zero')
        >>> [o.shape[1] for o in model(torch.rand(1, 3, 100, 75))]
        [64, 128, 256, 512]
    """

    arch_zoo: Dict[str, dict] = {
        'small':
        dict(
            embed_dims=[64, 128, 256, 512],
            depths=[2, 2, 10, 4],
            num_heads=[2, 4, 8, 16],
            **_SVT_COMMON),
        'base':
        dict(
            embed_dims=[96, 192, 384, 768],
            depths=[2, 2, 18, 2],
            num_heads=[3, 6, 12, 24],
            **_SVT_COMMON),
        'large':
        dict(
            embed_dims=[128, 256, 512, 1024],
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            **_SVT_COMMON),
    }
    arch_keys = TwinsBackbone.arch_keys + ('window_sizes', )

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 norm_after_stage: bool = True,
                 lsa_pad: str = 'mask',
                 **kwargs) -> None:
        super().__init__(
            arch, norm_after_stage=norm_after_stage, lsa_pad=lsa_pad,
            **kwargs)
