"""Linear layers with fused epilogues for CPU inference.

On the CPU, ``F.linear`` with a bias runs ``addmm``, which first copies the
broadcast bias into the whole output and then accumulates the GEMM on top;
the GELU after ``fc1`` and the residual addition after ``fc2``/``proj`` are
further passes over memory. For a Twins-PCPVT-S stage-1 MLP at 512x512
(16384 tokens, 64 -> 512 -> 64) those passes cost as much as the GEMMs.

oneDNN fuses all of it into the GEMM: bias, the exact (erf) GELU and a
residual add become post-ops of one kernel. PyTorch exposes that kernel as
``torch.ops.mkldnn._linear_pointwise`` (it is what TorchInductor's CPU
backend emits for ``linear -> gelu`` and ``linear -> add``). It has no
backward, so :func:`linear` takes it only when no gradient is wanted, for
fp32 CPU tensors outside autocast, tracing and ``torch.compile`` (FLOP
counters trace the plain ops), and when the layer has no hooks; everything
else runs the plain ``F.linear``/``F.gelu``/``+`` that it replaces. Both
paths compute the same function (tested to float tolerance).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_ACTS = (None, 'gelu')


def _mkldnn_linear():
    """The oneDNN linear-with-post-ops op, or None where this torch build
    lacks it (no mkldnn, or a version before it existed)."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_LINEAR_POINTWISE = _mkldnn_linear()


def _fusable(x: torch.Tensor, weight: torch.Tensor,
             bias: Optional[torch.Tensor]) -> bool:
    """Whether ``x @ weight.T + bias`` may take the fused oneDNN kernel."""
    if _LINEAR_POINTWISE is None or x.device.type != 'cpu' or \
            x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or
            (bias is not None and bias.requires_grad)):
        return False
    return not (torch.is_autocast_enabled('cpu') or torch.jit.is_tracing()
                or torch.jit.is_scripting()
                or torch.compiler.is_compiling())


def linear(x: torch.Tensor,
           layer: nn.Linear,
           act: Optional[str] = None,
           residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(layer(x)) + residual``, fused into one kernel when possible.

    Args:
        x (Tensor): Input of shape (..., in_features); any strides.
        layer (nn.Linear): The layer whose weight and bias are used; a
            layer with forward hooks is always called as a module.
        act (str, optional): ``'gelu'`` (exact, erf form) or None.
        residual (Tensor, optional): Added to the (activated) output.

    Returns:
        Tensor: Shape (..., out_features).
    """
    if act not in _ACTS:
        raise ValueError(f'act must be one of {_ACTS}, got {act!r}')
    if layer._forward_hooks or layer._forward_pre_hooks or \
            not _fusable(x, layer.weight, layer.bias):
        out = layer(x)
        if act == 'gelu':
            out = F.gelu(out)
        return out if residual is None else out + residual
    return _fused(x, layer.weight, layer.bias, act, residual)


def linear_weights(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through the fused kernel when
    possible (no ``addmm`` bias copy); for weights that belong to no single
    ``nn.Linear``, such as a concatenation of two."""
    if _fusable(x, weight, bias):
        return _fused(x, weight, bias, None, None)
    return F.linear(x, weight, bias)


def _fused(x: torch.Tensor, weight: torch.Tensor,
           bias: Optional[torch.Tensor], act: Optional[str],
           residual: Optional[torch.Tensor]) -> torch.Tensor:
    out_shape = (*x.shape[:-1], weight.shape[0])
    if residual is not None and act is None and \
            tuple(residual.shape) == out_shape:
        return _LINEAR_POINTWISE.binary(x, residual, weight, bias, 'add')
    out = _LINEAR_POINTWISE(x, weight, bias, act or 'none', [],
                            'none' if act else '')
    return out if residual is None else out + residual
