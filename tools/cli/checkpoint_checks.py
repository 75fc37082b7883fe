"""Checkpoint checks of the tools: strict evaluation and safe resume.

* :func:`choose_resume_checkpoint`: ``--resume`` without a value takes the
  newest checkpoint in the work dir that loads and has finite weights
  (:func:`mmtwins.engine.find_resume_checkpoint`), names every newer one it
  skips, and stops when there is nothing to resume; ``--resume CKPT`` must
  be a training checkpoint (not weights only, not a published model with
  ``meta`` and ``state_dict`` only) with finite weights.
* :func:`checkpoint_weights`: the weights of a checkpoint to evaluate,
  refused when they hold NaN/inf (a run that diverged).
* :func:`require_fit`: the checkpoint's weights must fit the built model
  key for key and shape for shape (``tools/test.py`` accepts a partial fit
  with ``--allow-partial-load``).
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Mapping

from mmtwins.engine import find_resume_checkpoint
from mmtwins.engine.resume import training_state_problem
from mmtwins.utils.checkpoint_fit import (
    compare_state_dicts,
    read_checkpoint,
    require_finite,
    unwrap_model,
    weights_of,
)

from .errors import ToolError


def choose_resume_checkpoint(resume: str, work_dir: str) -> str:
    """The checkpoint to resume from, for ``--resume [CKPT]``.

    Args:
        resume (str): ``'auto'`` (no value given) or a checkpoint path.
        work_dir (str): the run's work dir (searched for ``'auto'``).
    """
    if resume != 'auto':
        checkpoint = read_checkpoint(resume)
        problem = training_state_problem(checkpoint)
        if problem:
            raise ToolError(
                f'cannot resume from {resume}: {problem}; to start a new '
                f'run from its weights use --cfg-options load_from={resume}')
        require_finite(weights_of(checkpoint), resume)
        return resume
    choice = find_resume_checkpoint(work_dir)
    for path, reason in choice.skipped:
        print(f'warning: --resume skips {path}: {reason}', file=sys.stderr)
    if choice.path is None:
        if choice.skipped:
            raise ToolError(
                f'nothing to resume in {work_dir}: none of its '
                f'{len(choice.skipped)} checkpoints loads (see the warnings '
                'above); pass --resume CKPT, or run without --resume to '
                'train from scratch')
        raise ToolError(
            f'nothing to resume in {work_dir}: it has no checkpoint; check '
            '--work-dir, or run without --resume to train from scratch')
    print(f'resuming from {choice.path}', file=sys.stderr)
    return choice.path


def checkpoint_weights(checkpoint: str) -> Dict[str, Any]:
    """The model weights in ``checkpoint`` (read memory-mapped, so that an
    unreadable file fails before the model is built); NaN/inf weights are
    refused."""
    weights = weights_of(read_checkpoint(checkpoint))
    require_finite(weights, checkpoint)
    return weights


def require_fit(model, weights: Mapping[str, Any], checkpoint: str,
                config: str, allow_partial: bool = False,
                partial_flag: str = '') -> None:
    """Refuse ``checkpoint`` unless its weights fit ``model`` exactly.

    Args:
        model: the built model (DDP / TTA wrappers are looked through).
        weights (Mapping): its weights (:func:`checkpoint_weights`).
        checkpoint (str): path or URL, for the message.
        config (str): the config file, for the message.
        allow_partial (bool): only warn about a mismatch.
        partial_flag (str): the tool's flag that allows it, for the message.
    """
    diff = compare_state_dicts(unwrap_model(model).state_dict(), weights)
    if not diff:
        return
    msg = (f'checkpoint {checkpoint} does not fit the model of {config}: '
           f'{diff.summary()}')
    if allow_partial:
        print(f'warning: {msg}; loading the keys that fit ({partial_flag})',
              file=sys.stderr)
        return
    hint = f'; pass {partial_flag} to load it partially on purpose' \
        if partial_flag else ''
    raise ToolError(msg + '; is it a checkpoint of this config?' + hint)
