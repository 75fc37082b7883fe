"""Read a checkpoint file and check that its keys fit a model.

mmengine loads a checkpoint into a model non-strictly and only logs the key
mismatch, so a checkpoint of another model "loads" and evaluates to an AP of
zero. The functions here make the mismatch an error instead:

* :func:`read_checkpoint` reads a local file (memory-mapped, so checking a
  large file is cheap) or a URL under torch's safe loading and names the
  file when it is missing, truncated, not a checkpoint or refused;
* :func:`weights_of` takes the model weights out of a checkpoint dict;
* :func:`compare_state_dicts` lists missing, unexpected and mis-shaped keys;
* :func:`non_finite_keys` / :func:`require_finite` find NaN or infinite
  weights (a checkpoint of a run that diverged);
* :func:`unwrap_model` finds the model inside DDP / TTA wrappers.
"""
from __future__ import annotations

import os.path as osp
import pickle
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

import torch
import torch.nn as nn

from mmtwins.errors import CheckpointError


def _first_line(exc: BaseException) -> str:
    """The first sentence of the first line of an error message."""
    text = str(exc).strip().splitlines()
    return text[0].split('. ')[0] if text else type(exc).__name__


def _looks_like_torch_file(filename: str) -> bool:
    """A zip (torch >= 1.6) or a pickle (the legacy format) by its first
    bytes."""
    with open(filename, 'rb') as f:
        head = f.read(2)
    return head == b'PK' or head[:1] == b'\x80'


def read_checkpoint(filename: str,
                    what: str = 'checkpoint') -> Dict[str, Any]:
    """Load ``filename`` (path or URL) on the CPU under safe loading.

    Args:
        filename (str): local path or URL.
        what (str): how the messages name the file, e.g.
            ``'pretrained checkpoint (init_cfg.checkpoint)'``.

    Raises:
        CheckpointError: missing, unreadable, truncated or refused file.
    """
    if '://' in filename:
        from mmengine.runner.checkpoint import CheckpointLoader
        try:
            checkpoint = CheckpointLoader.load_checkpoint(
                filename, map_location='cpu')
        except Exception as exc:
            raise CheckpointError(
                f'cannot load {what} {filename}: {_first_line(exc)}; '
                'check the URL and the network, or download the file and '
                'pass its path') from exc
    else:
        if not osp.isfile(filename):
            raise CheckpointError(f'{what} not found: {filename}')
        if not _looks_like_torch_file(filename):
            raise CheckpointError(
                f'{filename} is not a PyTorch checkpoint (neither a zip '
                f'nor a pickle file); pass the {what} file')
        try:
            try:
                checkpoint = torch.load(filename, map_location='cpu',
                                        mmap=True)
            except RuntimeError as exc:
                if 'mmap' not in str(exc):
                    raise
                # a file in torch's legacy (non-zip) format
                checkpoint = torch.load(filename, map_location='cpu')
        except pickle.UnpicklingError as exc:
            found = [line.strip() for line in str(exc).splitlines()
                     if 'GLOBAL' in line]
            if found:
                raise CheckpointError(
                    f'refused to load {what} {filename}: it holds Python '
                    'objects outside the safe-loading allow-list '
                    f'({found[0]}); only load files you trust, and only '
                    'as weights') from exc
            raise CheckpointError(
                f'{filename} is not a PyTorch checkpoint '
                f'({_first_line(exc)})') from exc
        except Exception as exc:
            raise CheckpointError(
                f'cannot read {what} {filename}: {_first_line(exc)}; '
                'the file is truncated, corrupt or not a PyTorch '
                'checkpoint') from exc
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'{filename} holds a {type(checkpoint).__name__}, not a '
            'checkpoint dict')
    return dict(checkpoint)


def weights_of(checkpoint: Mapping) -> Dict[str, Any]:
    """The model weights of a checkpoint, as mmengine reads them: its
    ``state_dict`` (or the whole dict), without a ``module.`` prefix."""
    state = checkpoint.get('state_dict', checkpoint)
    return {(k[7:] if k.startswith('module.') else k): v
            for k, v in state.items()}


def non_finite_keys(weights: Mapping[str, Any]) -> List[str]:
    """The keys of the floating-point tensors in ``weights`` that hold a
    NaN or an infinity."""
    bad = []
    for key, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            bad.append(key)
    return bad


def require_finite(weights: Mapping[str, Any], checkpoint: str) -> None:
    """Refuse the weights of a run that diverged.

    Raises:
        CheckpointError: naming how many tensors hold NaN/inf and the first.
    """
    bad = non_finite_keys(weights)
    if bad:
        total = sum(isinstance(v, torch.Tensor) and v.is_floating_point()
                    for v in weights.values())
        raise CheckpointError(
            f'checkpoint {checkpoint} has non-finite weights (NaN or inf in '
            f'{len(bad)} of {total} tensors, e.g. {bad[0]}): it was saved '
            'by a run that diverged; use an earlier checkpoint of that run')


def _named(keys: List[str], limit: int) -> str:
    shown = ', '.join(keys[:limit])
    more = len(keys) - limit
    return shown + (f' (and {more} more)' if more > 0 else '')


@dataclass
class StateDictDiff:
    """How a state dict differs from the one a model expects."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    #: ``'key (checkpoint shape) vs (model shape)'`` entries.
    mis_shaped: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)

    def summary(self, limit: int = 3) -> str:
        """One line with the counts and the first ``limit`` keys of each."""
        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing keys: '
                         f'{_named(self.missing, limit)}')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected keys: '
                         f'{_named(self.unexpected, limit)}')
        if self.mis_shaped:
            parts.append(f'{len(self.mis_shaped)} keys with a shape '
                         f'mismatch: {_named(self.mis_shaped, limit)}')
        return '; '.join(parts)


def compare_state_dicts(expected: Mapping[str, Any],
                        given: Mapping[str, Any]) -> StateDictDiff:
    """Keys of ``expected`` (the model's) missing from ``given``, keys of
    ``given`` the model does not have, and shared keys of another shape."""
    diff = StateDictDiff(
        missing=sorted(k for k in expected if k not in given),
        unexpected=sorted(k for k in given if k not in expected))
    for key in sorted(k for k in given if k in expected):
        got, want = given[key], expected[key]
        if hasattr(got, 'shape') and hasattr(want, 'shape') and \
                tuple(got.shape) != tuple(want.shape):
            diff.mis_shaped.append(
                f'{key} {tuple(got.shape)} vs {tuple(want.shape)}')
    return diff


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model a checkpoint belongs to, inside DDP / TTA wrappers."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model
