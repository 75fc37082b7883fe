"""onnxruntime sessions for mmtwins' ONNX files.

A file exported with ``sasa_kernel=True`` (``pytorch2onnx.py
--sasa-kernel``) holds ``mmtwins.SASAttention`` nodes, which onnxruntime
runs only with mmtwins' operator library registered
(:mod:`mmtwins.ops.sasa_ort`). :func:`create_session` registers it for
every file that uses the ``mmtwins`` domain, so that every tool opens any
mmtwins file the same way.
"""
from __future__ import annotations

from typing import List, Optional

from mmtwins.errors import InputError


class OperatorLibraryError(InputError, RuntimeError):
    """A file needs mmtwins' onnxruntime operator library, which cannot be
    built here."""


def custom_domains(path: str) -> List[str]:
    """The non-standard operator domains an ONNX file imports."""
    import onnx
    proto = onnx.load(path, load_external_data=False)
    standard = ('', 'ai.onnx', 'ai.onnx.ml', 'com.microsoft')
    return [o.domain for o in proto.opset_import
            if o.domain not in standard]


def session_options(path: str, num_threads: Optional[int] = None,
                    options=None):
    """``onnxruntime.SessionOptions`` for ``path``: ``options`` (or new
    ones) with ``num_threads`` intra-op threads and, when the file uses the
    ``mmtwins`` domain, mmtwins' operator library registered."""
    import onnxruntime as ort

    from mmtwins.ops import sasa_ort
    options = options or ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    if sasa_ort.DOMAIN in custom_domains(path):
        try:
            sasa_ort.register(options)
        except sasa_ort.KernelCacheError as exc:
            raise OperatorLibraryError(
                f'{path} uses mmtwins\' SASA operator, but {exc}; export '
                'the model without --sasa-kernel for a file of standard '
                'operators only') from None
    return options


def create_session(path: str, num_threads: Optional[int] = None,
                   options=None):
    """An onnxruntime CPU ``InferenceSession`` of ``path`` (see
    :func:`session_options`)."""
    import onnxruntime as ort
    return ort.InferenceSession(
        path, session_options(path, num_threads, options),
        providers=['CPUExecutionProvider'])
