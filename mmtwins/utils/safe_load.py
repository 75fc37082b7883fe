"""Let ``torch.load`` read mmengine checkpoints under safe loading.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: it
unpickles only tensors, containers and an allowlist of globals. mmengine
0.10.7 calls ``torch.load`` without ``weights_only``, and the checkpoints
its ``Runner`` writes hold more than tensors, so ``--resume`` fails with
``UnpicklingError: Unsupported global``. Measured on torch 2.13 with
numpy 2.x, a checkpoint of an mmengine/mmdet/mmseg run holds exactly these
extra globals:

* ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's
  logged scalars (``message_hub.log_scalars``);
* ``numpy.ndarray`` rebuilt through ``numpy._core.multiarray._reconstruct``
  with a ``numpy.dtype`` (inside every ``HistoryBuffer``);
* ``numpy._core.multiarray.scalar``: numpy scalars such as a
  ``numpy.float64`` metric in ``runtime_info`` or a log buffer;
* ``builtins.getattr``: a ``HistoryBuffer`` pickles its statistics table as
  ``getattr(HistoryBuffer, 'mean')`` and so on.

This module allowlists those, and nothing more general: instead of the
real ``getattr`` (which would let a crafted file reach any attribute of an
allowed object, and from there arbitrary code) the name
``builtins.getattr`` is bound to :func:`history_buffer_getattr`, which only
returns the statistics methods registered on ``HistoryBuffer``. Numpy
paths are registered under both the numpy 2 (``numpy._core``) and numpy 1
(``numpy.core``) module names, so checkpoints written with either load.
Any other global still makes ``torch.load`` raise ``UnpicklingError``.

:func:`register_safe_globals` runs when ``mmtwins`` is imported.
"""
from __future__ import annotations

from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

SafeGlobal = Union[Callable, Tuple[Callable, str]]


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods.

    Args:
        obj (Any): must be the ``HistoryBuffer`` class itself.
        name (str): a statistics name registered on it, such as ``'mean'``.

    Returns:
        Callable: the unbound statistics method.

    Raises:
        pickle.UnpicklingError: for any other object or attribute name.
    """
    if obj is HistoryBuffer and isinstance(name, str):
        method = getattr(HistoryBuffer, name, None)
        registered = set(HistoryBuffer._statistics_methods.values())
        defaults = {HistoryBuffer.min, HistoryBuffer.max,
                    HistoryBuffer.current, HistoryBuffer.mean}
        if method is not None and method in registered | defaults:
            return method
    import pickle
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); mmtwins only '
        'allows the statistics methods of mmengine HistoryBuffer')


def _numpy_globals() -> List[SafeGlobal]:
    """The numpy rebuild functions and types, under numpy 1 and 2 names."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    out: List[SafeGlobal] = [(np.ndarray, 'numpy.ndarray'),
                             (np.dtype, 'numpy.dtype')]
    for prefix in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        out.append((multiarray._reconstruct, f'{prefix}._reconstruct'))
        out.append((multiarray.scalar, f'{prefix}.scalar'))
    # A dtype is rebuilt as ``numpy.dtype('f8')`` and then gets its state
    # set; the unpickler checks the type of that object, which is a concrete
    # class such as numpy.dtypes.Float64DType (numpy >= 1.25).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                out.append((cls, f'numpy.dtypes.{name}'))
    return out


def mmengine_checkpoint_globals() -> List[SafeGlobal]:
    """Everything an mmengine 0.10.7 checkpoint needs beyond torch's
    default allowlist, as entries for ``torch.serialization``."""
    return [
        (HistoryBuffer,
         'mmengine.logging.history_buffer.HistoryBuffer'),
        (history_buffer_getattr, 'builtins.getattr'),
        *_numpy_globals(),
    ]


def register_safe_globals() -> None:
    """Allowlist the mmengine checkpoint globals for ``torch.load``.

    A no-op on torch versions without ``add_safe_globals`` (< 2.4), whose
    ``torch.load`` does not default to safe loading anyway.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(mmengine_checkpoint_globals())
