"""Strict loading of ImageNet / dense-task checkpoints into Twins backbones.

mmengine's ``Pretrained`` initialiser loads non-strictly and only warns, so a
checkpoint in the wrong layout loads *nothing* without failing. The Twins
backbones load through :func:`load_twins_pretrained` instead, which:

* reads local files and URLs with mmengine's checkpoint loaders;
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
from mmengine.runner.checkpoint import CheckpointLoader

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
        CheckpointFormatError: when keys are missing, unexpected or have the
            wrong shape, naming them.
    """
    name = type(model).__name__
    checkpoint = CheckpointLoader.load_checkpoint(
        filename, map_location='cpu', logger=logger)
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

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    fresh_norms = [k for k in missing if k.startswith('norm_list.')]
    missing = [k for k in missing if k not in fresh_norms]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
              for k in state if k in own and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys: {_named(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_named(unexpected)}')
    if shapes:
        problems.append(f'shape mismatch: {_named(shapes, 3)}')
    if problems:
        raise CheckpointFormatError(
            f'{filename} does not fit {name} ({fmt} layout): '
            + '; '.join(problems))
    model.load_state_dict(state, strict=False)
    if fresh_norms:
        logger.info(f'{name}: {filename} has no per-stage norm_list; it '
                    'starts from ones/zeros')
    logger.info(f'{name}: loaded {len(state)} tensors from {filename}')
