"""SASA's fused CPU kernel as an onnxruntime custom operator.

Written with standard ONNX operators (:mod:`.sasa_export`), SASA's local
attention gathers every pixel's k x k neighbours into k^2-fold copies of
the keys and values; onnxruntime then runs it several times slower than
the fused kernel that PyTorch uses. ``csrc/sasa_ort.cpp`` is that kernel
(``csrc/sasa_kernel.h``, the same source as the PyTorch op's) as operator
``SASAttention`` of domain ``mmtwins`` (version 1) for onnxruntime's CPU
execution provider, running on the session's intra-op threads:

- inputs ``query, key, value`` float32 ``(B, heads, d, H, W)`` and the
  offset tables ``rel_h, rel_w`` ``(k, heads, d / 2)``; outputs the
  attention ``(B, heads, d, H, W)`` and the log-sum-exp of the logits
  ``(B, heads, H, W)`` (the PyTorch op's two outputs);
- the exporter writes it when asked
  (``export_end_to_end(..., sasa_kernel=True)``, ``pytorch2onnx.py
  --sasa-kernel``); a file holding it runs in onnxruntime once the library
  is registered in the session options, which :func:`register` does
  (:func:`mmtwins.deploy.runtime.create_session` calls it for every file
  that uses the ``mmtwins`` domain).

The library is compiled with the C++ compiler on first use (seconds; no
onnxruntime headers are needed: ``csrc/ort_abi.h`` declares the part of
onnxruntime's stable C API it uses) and kept in the verified cache of
:mod:`.kernel_cache`, named after this CPU's instruction sets like the
PyTorch kernel. For a deployment without mmtwins, :func:`library` gives
its path; any onnxruntime >= 1.17 loads it with
``SessionOptions.register_custom_ops_library(path)`` (C++:
``Ort::SessionOptions::RegisterCustomOpsLibrary``).
"""
import os
import os.path as osp
import threading
from typing import Optional

from .kernel_cache import KernelCacheError, build_library, cpu_tag

#: ONNX domain and operator type of the custom operator.
DOMAIN = 'mmtwins'
OP_TYPE = 'SASAttention'
OPSET_VERSION = 1

_CSRC = osp.join(osp.dirname(__file__), 'csrc')
_SOURCE = osp.join(_CSRC, 'sasa_ort.cpp')
_HEADERS = [osp.join(_CSRC, 'sasa_kernel.h'), osp.join(_CSRC, 'ort_abi.h')]
_lock = threading.Lock()
_path: Optional[str] = None


def library() -> str:
    """Path of the custom-operator library, built on first use.

    Raises:
        KernelCacheError: One line naming why it cannot be built (no
            compiler, read-only cache, the compiler's first error).
    """
    global _path
    if _path is None:
        with _lock:
            if _path is None:
                flags = ['-O3', '-march=native', '-std=c++17',
                         '-fno-math-errno', '-fvisibility=hidden']
                _path = build_library(
                    f'mmtwins_sasa_ort_{cpu_tag()}', [_SOURCE],
                    'the onnxruntime SASA operator', flags=flags,
                    headers=_HEADERS,
                    debug=os.environ.get('MMTWINS_DEBUG') == '1')
    return _path


def register(options) -> None:
    """Register the library in onnxruntime ``SessionOptions``."""
    options.register_custom_ops_library(library())


__all__ = ['DOMAIN', 'OP_TYPE', 'OPSET_VERSION', 'KernelCacheError',
           'library', 'register']
