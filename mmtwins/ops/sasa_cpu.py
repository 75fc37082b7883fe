"""The fused CPU kernel of SASA's local attention, built on first use.

``csrc/sasa_kernel.h`` (bound to PyTorch by ``csrc/sasa_cpu.cpp``)
computes one image row's k x k logits (positional part included, from the
offset embeddings), softmax and weighted values in cache, so neither the
q . k products nor the positional logits go to memory (the offset loop
of :mod:`.sasa_op` writes every one of them). It runs on ATen's intra-op
threads (``torch.get_num_threads()``).

The kernel is compiled with ``torch.utils.cpp_extension`` the first time
SASA runs on a CPU tensor (about a minute; a C++ compiler and ninja are
needed) and kept in the verified cache of :mod:`.kernel_cache` under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions/py3X_cpu``):
a complete build is loaded directly (also from a read-only folder), a
truncated or interrupted one is rebuilt with one line. It is built with
``-march=native``, so the build is named after this CPU's instruction sets:
nodes with different CPUs sharing one home folder each get their own build
instead of one that crashes on the other.

If the kernel can be neither loaded nor built, SASA falls back to the exact
offset loop of :mod:`.sasa_op` and says so once, in one line naming the
cause (read-only cache, missing compiler or ninja, or the compiler's first
error; ``MMTWINS_DEBUG=1`` raises the build error with the whole output
instead); set ``MMTWINS_SASA_CPU_KERNEL=0`` to choose the fallback without
trying.
"""
import os
import os.path as osp
import threading
import warnings
from types import ModuleType
from typing import Optional, Sequence, Tuple

from torch import Tensor

from .kernel_cache import KernelCacheError, cpu_tag, load_extension

_CSRC = osp.join(osp.dirname(__file__), 'csrc')
_SOURCE = osp.join(_CSRC, 'sasa_cpu.cpp')
_HEADER = osp.join(_CSRC, 'sasa_kernel.h')
_lock = threading.Lock()
_module: Optional[ModuleType] = None
_failure: Optional[str] = None


def _build() -> ModuleType:
    """The kernel from the verified cache, built there if needed."""
    name = f'mmtwins_sasa_cpu_{cpu_tag()}'
    flags = ['-O3', '-march=native', '-fopenmp', '-fno-math-errno']
    return load_extension(name, [_SOURCE], 'the SASA CPU kernel',
                          extra_cflags=flags, extra_ldflags=['-fopenmp'],
                          debug=os.environ.get('MMTWINS_DEBUG') == '1',
                          headers=[_HEADER])


def kernel() -> Optional[ModuleType]:
    """The compiled kernel module, or None when it cannot be had."""
    global _module, _failure
    if _module is not None or _failure is not None:
        return _module
    with _lock:
        if _module is None and _failure is None:
            if os.environ.get('MMTWINS_SASA_CPU_KERNEL', '1') == '0':
                _failure = 'disabled by MMTWINS_SASA_CPU_KERNEL=0'
                return None
            try:
                _module = _build()
            except KernelCacheError as error:
                _failure = str(error)
                warnings.warn(
                    f'mmtwins: {_failure}; SASA runs the slower exact '
                    'offset loop instead (MMTWINS_DEBUG=1 shows the whole '
                    'build output).', stacklevel=2)
    return _module


def forward(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
            rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """Output ``(BH, d, H, W)`` and log-sum-exp ``(BH, H, W)``.

    ``q, k, v`` are contiguous ``(BH, d, H, W)``; ``rel_h, rel_w`` the
    ``(k, heads, d / 2)`` offset embeddings (slice ``n`` is head
    ``n % heads``).
    """
    out, lse = kernel().forward(q, k, v, rel_h.contiguous(),
                                rel_w.contiguous())
    return out, lse


def backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
             rel_w: Tensor, out: Tensor, lse: Tensor,
             needs: Sequence[bool]) -> Tuple[Tensor, ...]:
    """Gradients for ``q``, ``k``, ``v`` and the positional logits
    ``pos_row, pos_col`` (``(BH, k, H, W)`` each, from which the offset
    embeddings' gradients follow).

    The arguments are those of :func:`forward`, then its outputs. ``needs``
    flags q, k, v and the positional logits; the gradients not needed are
    not computed (empty tensors). Half and bfloat16 inputs get float32
    gradients (accumulated in float32).
    """
    need_q, need_k, need_v, need_pos = (bool(n) for n in needs)
    return tuple(kernel().backward(grad, q, k, v, rel_h.contiguous(),
                                   rel_w.contiguous(), out, lse, need_q,
                                   need_k, need_v, need_pos))
