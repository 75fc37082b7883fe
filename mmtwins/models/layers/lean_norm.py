"""Autograd functions that recompute a LayerNorm instead of storing it.

Twins blocks are pre-norm: ``norm1`` feeds the attention projections and
``norm2`` the MLP. Autograd keeps every normalised copy (and, in LSA, its
padded window-major copy) for the weight gradients, one token-width
activation per site and block. The functions here keep only the LayerNorm
input, which stays alive anyway (it is the residual), and recompute the
normalised tokens in backward: one LayerNorm and, for LSA, one copy. The
arithmetic and gradients are those of the plain modules (tested in float64).
Under mixed precision they follow autocast's choices: LayerNorm in fp32,
the matrix products in the gradient's (half) dtype, whatever the autocast
state of the backward pass.
"""
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fused_linear import linear_weights


def recompute_norm(norm: nn.Module) -> bool:
    """Whether a function of this module may stand in for ``norm``: when
    gradients are wanted, for a plain affine LayerNorm, outside CPU autocast
    and tracing (FLOP counters trace the plain modules)."""
    return (torch.is_grad_enabled() and type(norm) is nn.LayerNorm
            and norm.elementwise_affine and norm.bias is not None
            and not torch.jit.is_tracing()
            and not torch.is_autocast_enabled('cpu'))


def _layer_norm(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor,
                eps: float):
    """``native_layer_norm`` in the LayerNorm's dtype: under mixed precision
    ``x`` may be half while the affine parameters are fp32 (autocast runs
    LayerNorm in fp32, and so do these functions, in both passes)."""
    return torch.native_layer_norm(x.to(ln_w.dtype), x.shape[-1:], ln_w,
                                   ln_b, eps)


def _layer_norm_backward(grad: torch.Tensor, x: torch.Tensor,
                         mean: torch.Tensor, rstd: torch.Tensor,
                         ln_w: torch.Tensor, ln_b: torch.Tensor, need):
    """Gradients of :func:`_layer_norm` for x, weight and bias."""
    dtype = ln_w.dtype
    return torch.ops.aten.native_layer_norm_backward(
        grad.to(dtype), x.to(dtype), x.shape[-1:], mean, rstd, ln_w, ln_b,
        [need[0], need[1], need[2]])


class NormMlpFunction(torch.autograd.Function):
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
        normed, mean, rstd = _layer_norm(x, ln_w, ln_b, eps)
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
            grads[6] = grad_out.t() @ F.gelu(hidden).to(grad_out.dtype)
        if need[7] and ctx.has_bias[1]:
            grads[7] = grad_out.sum(0)
        if not any(need[:6]):
            return tuple(grads)
        grad_h = torch.ops.aten.gelu_backward(
            grad_out @ w2.to(grad_out.dtype), hidden.to(grad_out.dtype))
        del hidden
        if need[4]:
            normed = _layer_norm(x, ln_w, ln_b, ctx.eps)[0]
            grads[4] = grad_h.t() @ normed.reshape(
                -1, normed.shape[-1]).to(grad_h.dtype)
            del normed
        if need[5] and ctx.has_bias[0]:
            grads[5] = grad_h.sum(0)
        if any(need[:3]):
            grad_normed = (grad_h @ w1.to(grad_h.dtype)).view(x.shape)
            del grad_h
            grads[0], grads[1], grads[2] = _layer_norm_backward(
                grad_normed, x, mean, rstd, ln_w, ln_b, need)
        return tuple(grads)


class NormWindowLinearFunction(torch.autograd.Function):
    """``linear(windows(layer_norm(x)))`` saving only ``x``.

    ``windows`` is a pure re-layout (LSA's bottom/right zero padding and
    window-major reordering of the normalised tokens); it runs again in
    backward, where autograd also gives its adjoint.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type='cuda')
    def forward(ctx, x: torch.Tensor, ln_w: torch.Tensor,
                ln_b: torch.Tensor, eps: float,
                windows: Callable[[torch.Tensor], torch.Tensor],
                weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        normed, mean, rstd = _layer_norm(x, ln_w, ln_b, eps)
        ctx.save_for_backward(x, mean, rstd, ln_w, ln_b, weight)
        ctx.eps, ctx.windows = eps, windows
        ctx.has_bias = bias is not None
        return linear_weights(windows(normed), weight, bias)

    @staticmethod
    @torch.amp.custom_bwd(device_type='cuda')
    def backward(ctx, grad_out):
        x, mean, rstd, ln_w, ln_b, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = [None] * 7
        normed = _layer_norm(x, ln_w, ln_b,
                             ctx.eps)[0].requires_grad_(True)
        with torch.enable_grad():
            win = ctx.windows(normed)
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if need[5]:
            grads[5] = flat_grad.t() @ win.detach().reshape(
                -1, win.shape[-1]).to(flat_grad.dtype)
        if need[6] and ctx.has_bias:
            grads[6] = flat_grad.sum(0)
        if any(need[:3]):
            grad_win = (grad_out @ weight.to(grad_out.dtype)).to(win.dtype)
            grad_normed, = torch.autograd.grad(win, normed, grad_win)
            del win, normed, grad_win
            grads[0], grads[1], grads[2] = _layer_norm_backward(
                grad_normed, x, mean, rstd, ln_w, ln_b, need)
        return tuple(grads)
