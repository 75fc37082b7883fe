"""Strict loading of ImageNet / dense-task checkpoints into Twins backbones.

mmengine's ``Pretrained`` initialiser loads non-strictly and only warns, so a
checkpoint in the wrong layout loads *nothing* without failing. The Twins
backbones load through :func:`load_twins_pretrained` instead, which:

* reads local files and URLs with :func:`~.checkpoint_fit.read_checkpoint`
  (safe loading; a missing file, an unreachable URL or a corrupt file is a
  :class:`~mmtwins.errors.CheckpointError` naming it);
* accepts raw, ``state_dict`` and ``model`` wrappers and full detector or
  segmentor checkpoints (their ``backbone.*`` part);
* converts mmseg and mmpretrain layouts to the official names;
* drops, and logs, the classifier ``head.*``/``norm.*`` and the weights of
  stages the backbone does not build (``out_indices`` ending early);
* initialises ``norm_list`` to ones/zeros when the checkpoint has none (an
  ImageNet checkpoint never has; the official dense code does the same), and
  logs it;
* refuses every other missing, unexpected or mis-shaped key in one line.
"""
import re
from typing import List

import torch.nn as nn
from mmengine.logging import MMLogger

from .checkpoint_fit import compare_state_dicts, read_checkpoint
from .ckpt_convert import (
    CheckpointFormatError,
    _named,
    drop_classifier,
    split_backbone,
    to_official,
    unwrap_state_dict,
)


def load_twins_pretrained(model: nn.Module, filename: str,
                          logger: MMLogger) -> None:
    """Load ``filename`` into a Twins backbone, strictly (module docstring).

    Raises:
        CheckpointError: when the file cannot be read, naming it.
        CheckpointFormatError: when keys are missing, unexpected or have the
            wrong shape, naming them.
    """
    name = type(model).__name__
    checkpoint = read_checkpoint(
        filename, what='pretrained checkpoint (init_cfg.checkpoint)')
    state = unwrap_state_dict(checkpoint)
    state, rest = split_backbone(state)
    if rest:
        logger.info(f'{name}: using the {len(state)} backbone.* keys of '
                    f'{filename}; its {len(rest)} other keys (neck/heads) '
                    'are not part of the backbone')
    state, fmt = to_official(state)
    if fmt != 'official':
        logger.info(f'{name}: converted {fmt} key names of {filename}')
    state, dropped = drop_classifier(state)
    if dropped:
        logger.info(f'{name}: dropped classifier keys {_named(dropped)}')
    built = getattr(model, 'num_built', None)
    unbuilt: List[str] = []
    if built is not None:
        for key in list(state):
            m = re.match(r'(patch_embeds|blocks|pos_block|norm_list)\.(\d+)',
                         key)
            if m and int(m.group(2)) >= built:
                unbuilt.append(key)
                del state[key]
    if unbuilt:
        logger.info(f'{name}: dropped {len(unbuilt)} keys of stages >= '
                    f'{built}, which out_indices leaves unbuilt')

    diff = compare_state_dicts(model.state_dict(), state)
    fresh_norms = [k for k in diff.missing if k.startswith('norm_list.')]
    diff.missing = [k for k in diff.missing if k not in fresh_norms]
    if diff:
        raise CheckpointFormatError(
            f'{filename} does not fit {name} ({fmt} layout): '
            + diff.summary(limit=6))
    model.load_state_dict(state, strict=False)
    if fresh_norms:
        logger.info(f'{name}: {filename} has no per-stage norm_list; it '
                    'starts from ones/zeros')
    logger.info(f'{name}: loaded {len(state)} tensors from {filename}')
