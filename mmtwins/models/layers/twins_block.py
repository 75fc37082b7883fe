"""The pre-norm transformer block shared by Twins-PCPVT and Twins-SVT.

Twins (arXiv 2104.13840, official code https://github.com/Meituan-AutoML/Twins,
Apache-2.0): ``x + drop_path(attn(norm1(x)))`` then
``x + drop_path(mlp(norm2(x)))``, where ``attn`` is GSA or LSA. Drop path is
applied once per branch, as in the official code (mmseg and mmpretrain apply
it twice). Names (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
are the official/timm ones.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import DropPath

from .fused_linear import linear, linear_weights
from .gsa import GlobalSubsampledAttention
from .lsa import LocallyGroupedAttention


class _NormMlpFunction(torch.autograd.Function):
    """``fc2(gelu(fc1(layer_norm(x))))`` saving only ``x`` and ``fc1(...)``.

    Autograd would keep the LayerNorm output, the GELU input and the GELU
    output for backward: one token-width and two hidden-width activations
    per token, most of a Twins block's training memory. This function keeps
    the LayerNorm input (alive anyway as the residual) and the GELU input,
    and recomputes the two cheap element-wise results in backward. Same
    arithmetic, same gradients.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type='cuda')
    def forward(ctx, x, ln_w, ln_b, eps, w1, b1, w2, b2):
        normed, mean, rstd = torch.native_layer_norm(
            x, x.shape[-1:], ln_w, ln_b, eps)
        hidden = linear_weights(normed, w1, b1)
        ctx.save_for_backward(x, mean, rstd, hidden, ln_w, ln_b, w1, w2)
        ctx.eps = eps
        ctx.has_bias = (b1 is not None, b2 is not None)
        return linear_weights(F.gelu(hidden), w2, b2)

    @staticmethod
    @torch.amp.custom_bwd(device_type='cuda')
    def backward(ctx, grad_out):
        x, mean, rstd, hidden, ln_w, ln_b, w1, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = [None] * 8
        grad_out = grad_out.reshape(-1, grad_out.shape[-1])
        hidden = hidden.reshape(-1, hidden.shape[-1])
        if need[6]:
            grads[6] = grad_out.t() @ F.gelu(hidden)
        if need[7] and ctx.has_bias[1]:
            grads[7] = grad_out.sum(0)
        if not any(need[:6]):
            return tuple(grads)
        grad_h = torch.ops.aten.gelu_backward(grad_out @ w2, hidden)
        del hidden
        if need[4]:
            normed = torch.native_layer_norm(x, x.shape[-1:], ln_w, ln_b,
                                             ctx.eps)[0]
            grads[4] = grad_h.t() @ normed.reshape(-1, normed.shape[-1])
            del normed
        if need[5] and ctx.has_bias[0]:
            grads[5] = grad_h.sum(0)
        if any(need[:3]):
            grad_normed = (grad_h @ w1).view(x.shape)
            del grad_h
            ln_backward = torch.ops.aten.native_layer_norm_backward
            grads[0], grads[1], grads[2] = ln_backward(
                grad_normed, x, x.shape[-1:], mean, rstd, ln_w, ln_b,
                [need[0], need[1], need[2]])
        return tuple(grads)


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

    def forward(self,
                x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``drop(fc2(drop(act(fc1(x))))) + residual``; without active
        dropout the GELU and the residual addition are fused into the
        layers where possible (see :mod:`.fused_linear`)."""
        if self.training and self.drop.p > 0:
            out = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
            return out if residual is None else out + residual
        if type(self.act) is nn.GELU and self.act.approximate == 'none':
            hidden = linear(x, self.fc1, act='gelu')
        else:
            hidden = self.act(self.fc1(x))
        return linear(hidden, self.fc2, residual=residual)


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

    def _lean_mlp(self, x: torch.Tensor) -> bool:
        """Whether ``norm2`` + ``mlp`` can run as :class:`_NormMlpFunction`:
        when gradients are wanted, without dropout, CPU autocast or
        tracing (FLOP counters trace the plain modules)."""
        return (torch.is_grad_enabled() and self.mlp.drop.p == 0
                and type(self.norm2) is nn.LayerNorm
                and type(self.mlp.act) is nn.GELU
                and not torch.jit.is_tracing()
                and not torch.is_autocast_enabled('cpu'))

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        if not self.training:
            # Drop path is the identity: the residual additions can be
            # fused into ``proj`` and ``fc2``.
            x = self.attn(self.norm1(x), hw_shape, residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        if self._lean_mlp(x):
            norm, mlp = self.norm2, self.mlp
            out = _NormMlpFunction.apply(x, norm.weight, norm.bias, norm.eps,
                                         mlp.fc1.weight, mlp.fc1.bias,
                                         mlp.fc2.weight, mlp.fc2.bias)
        else:
            out = self.mlp(self.norm2(x))
        return x + self.drop_path(out)
