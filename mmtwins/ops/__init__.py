"""Kernels and their registrations, apart from the ``nn.Module`` layers.

SASA's local k x k attention is one registered op,
``torch.ops.mmtwins.sasa_attention`` (:mod:`.sasa_op`: registration,
autograd and the exact offset loop that is the reference and fallback),
with its fused implementations, one per device: the C++ CPU kernel
(:mod:`.sasa_cpu`, source in ``csrc/``) and the Triton kernels
(:mod:`.sasa_triton`), the decomposition into standard ops that ONNX
export uses (:mod:`.sasa_export`), and the CPU kernel as an onnxruntime
custom operator for exported files (:mod:`.sasa_ort`). Importing this
package registers the ops.
"""
from .sasa_op import sasa_attention

__all__ = ['sasa_attention']
