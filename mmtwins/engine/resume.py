"""Pick the checkpoint an interrupted run resumes from.

mmengine's auto-resume trusts ``last_checkpoint`` blindly: an empty file, a
path to a deleted checkpoint or a truncated one ends the run with an error
that does not name the file, and a work dir with nothing in it silently
starts from scratch. :func:`find_resume_checkpoint` instead tries, newest
first, the file that ``last_checkpoint`` names and then every ``*.pth`` in
the work dir (``best_*`` files hold no optimizer state and are left out),
and returns the first one that loads as a training checkpoint with finite
weights, with the reason each newer candidate was skipped (truncated, no
training state, NaN/inf weights of a run that diverged).
"""
from __future__ import annotations

import glob
import os.path as osp
import re
from typing import List, Mapping, NamedTuple, Optional, Tuple

from mmtwins.errors import CheckpointError
from mmtwins.utils.checkpoint_fit import (
    read_checkpoint,
    require_finite,
    weights_of,
)

_NUMBER = re.compile(r'(\d+)\.pth$')


class ResumeChoice(NamedTuple):
    """The checkpoint to resume from (``None``: nothing loads) and the
    ``(path, reason)`` of every newer candidate that was skipped."""

    path: Optional[str]
    skipped: List[Tuple[str, str]]


def training_state_problem(checkpoint: Mapping) -> Optional[str]:
    """Why ``checkpoint`` cannot resume a run, or ``None`` if it can."""
    meta = checkpoint.get('meta')
    if not isinstance(meta, Mapping) or 'epoch' not in meta \
            or 'iter' not in meta:
        return ('it has no training state (meta.epoch/iter): it holds '
                'weights only')
    if 'state_dict' not in checkpoint:
        return 'it has no state_dict'
    if 'message_hub' not in checkpoint:
        # what mmdet's publish_model keeps: meta and weights only
        return ('it has no training state (no message_hub): it holds '
                'weights and meta only, like a published model')
    return None


def _candidates(work_dir: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    found: List[str] = []
    skipped: List[Tuple[str, str]] = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if not named:
            skipped.append((pointer, 'it is empty'))
        elif not osp.isfile(named):
            skipped.append((named, f'named by {pointer} but not found'))
        else:
            found.append(named)

    def newest_first(path: str) -> Tuple[int, float]:
        match = _NUMBER.search(path)
        return (int(match.group(1)) if match else -1, osp.getmtime(path))

    files = [p for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth'))
             if not osp.basename(p).startswith('best_')]
    for path in sorted(files, key=newest_first, reverse=True):
        if not any(osp.samefile(path, f) for f in found):
            found.append(path)
    return found, skipped


def find_resume_checkpoint(work_dir: str) -> ResumeChoice:
    """The newest checkpoint in ``work_dir`` that loads and can resume."""
    candidates, skipped = _candidates(work_dir)
    for path in candidates:
        try:
            checkpoint = read_checkpoint(path)
            problem = training_state_problem(checkpoint)
            if problem is None:
                require_finite(weights_of(checkpoint), path)
        except CheckpointError as exc:
            problem = str(exc)
        if problem is None:
            return ResumeChoice(path, skipped)
        skipped.append((path, problem))
    return ResumeChoice(None, skipped)
