"""Lossless conversion of Twins checkpoints between key layouts.

mmtwins uses the key names of the official Twins code and timm (the
``official`` layout). Two other layouts are in circulation:

* ``mmseg`` (MMSegmentation 1.x ``PCPVT``/``SVT``): ``layers`` instead of
  ``blocks``; GSA query/key/value stacked in ``attn.attn.in_proj_*`` (q|k|v)
  and its output projection in ``attn.attn.out_proj``; mmcv FFN names;
  ``position_encodings.i.proj``; ``patch_embeds.i.projection``.
* ``mmpretrain`` (MMPretrain 1.x): ``stages`` instead of ``blocks``; separate
  ``q``/``kv``; FFN names; ``norm_after_stage{i}`` for the stage norms (the
  last one alone is the classifier's final norm); ``head.fc``.

Official dense-task checkpoints keep the backbone under ``backbone.`` along
with the dead classifier ``backbone.norm``/``backbone.head``; those two are
dropped by the conversion and reported.

Every function refuses keys it does not recognise, naming them, instead of
passing them through: a silently wrong mapping would load as random weights.
"""
import re
from typing import Dict, List, Mapping, Tuple

import torch

from mmtwins.errors import CheckpointError

StateDict = Dict[str, torch.Tensor]
FORMATS = ('official', 'mmseg', 'mmpretrain')
BACKBONE_PREFIX = 'backbone.'

# official <-> mmseg renames that need no tensor surgery (regex on key).
_MMSEG_RENAMES = [
    (r'patch_embeds\.(\d+)\.projection\.', r'patch_embeds.\1.proj.'),
    (r'patch_embeds\.(\d+)\.norm\.', r'patch_embeds.\1.norm.'),
    (r'position_encodings\.(\d+)\.proj\.', r'pos_block.\1.proj.0.'),
    (r'layers\.(\d+)\.(\d+)\.norm([12])\.', r'blocks.\1.\2.norm\3.'),
    (r'layers\.(\d+)\.(\d+)\.attn\.(sr|norm|qkv|proj)\.',
     r'blocks.\1.\2.attn.\3.'),
    (r'layers\.(\d+)\.(\d+)\.attn\.attn\.out_proj\.',
     r'blocks.\1.\2.attn.proj.'),
    (r'layers\.(\d+)\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.\2.mlp.fc1.'),
    (r'layers\.(\d+)\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.\2.mlp.fc2.'),
    (r'norm_list\.(\d+)\.', r'norm_list.\1.'),
]
_MMPRETRAIN_RENAMES = [
    (r'patch_embeds\.(\d+)\.projection\.', r'patch_embeds.\1.proj.'),
    (r'patch_embeds\.(\d+)\.norm\.', r'patch_embeds.\1.norm.'),
    (r'position_encodings\.(\d+)\.proj\.', r'pos_block.\1.proj.0.'),
    (r'stages\.(\d+)\.(\d+)\.norm([12])\.', r'blocks.\1.\2.norm\3.'),
    (r'stages\.(\d+)\.(\d+)\.attn\.(q|kv|sr|norm|qkv|proj)\.',
     r'blocks.\1.\2.attn.\3.'),
    (r'stages\.(\d+)\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.\2.mlp.fc1.'),
    (r'stages\.(\d+)\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.\2.mlp.fc2.'),
]
_OFFICIAL_KEY = re.compile(
    r'(patch_embeds\.\d+\.(proj|norm)'
    r'|pos_block\.\d+\.proj\.0'
    r'|blocks\.\d+\.\d+\.(norm1|norm2|mlp\.fc1|mlp\.fc2'
    r'|attn\.(q|kv|sr|norm|qkv|proj))'
    r'|norm_list\.\d+|norm|head)\.(weight|bias)$')
_IN_PROJ = re.compile(
    r'layers\.(\d+)\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$')


class CheckpointFormatError(CheckpointError):
    """A checkpoint whose keys do not fit the layout it is read as."""


def _named(keys: List[str], limit: int = 6) -> str:
    shown = ', '.join(sorted(keys)[:limit])
    more = len(keys) - limit
    return shown + (f' (and {more} more)' if more > 0 else '')


def unwrap_state_dict(checkpoint: Mapping) -> StateDict:
    """Return the state dict of a raw, ``state_dict`` or ``model`` file.

    A leading ``module.`` (DataParallel/DDP) is stripped from every key.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(
            f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    state = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint.get(wrapper), Mapping):
            state = checkpoint[wrapper]
            break
    if not state or not all(isinstance(v, torch.Tensor)
                            for v in state.values()):
        raise CheckpointFormatError(
            'no state dict of tensors found: expected a raw state dict or '
            "one under 'state_dict' or 'model'")
    return {k[7:] if k.startswith('module.') else k: v
            for k, v in state.items()}


def split_backbone(state: StateDict) -> Tuple[StateDict, StateDict]:
    """Split ``backbone.*`` keys (prefix stripped) from the rest.

    A state dict without any ``backbone.`` key is all backbone.
    """
    if not any(k.startswith(BACKBONE_PREFIX) for k in state):
        return dict(state), {}
    n = len(BACKBONE_PREFIX)
    backbone = {k[n:]: v for k, v in state.items()
                if k.startswith(BACKBONE_PREFIX)}
    rest = {k: v for k, v in state.items()
            if not k.startswith(BACKBONE_PREFIX)}
    return backbone, rest


def detect_format(state: StateDict) -> str:
    """Tell which of :data:`FORMATS` a backbone state dict is in."""
    keys = list(state)
    if any(k.startswith('layers.') for k in keys):
        return 'mmseg'
    if any(k.startswith('stages.') for k in keys):
        return 'mmpretrain'
    if any(k.startswith('blocks.') for k in keys):
        return 'official'
    raise CheckpointFormatError(
        'not a Twins backbone state dict (no blocks./layers./stages. keys); '
        f'first keys: {_named(keys)}')


def _rename(state: StateDict, rules, fmt: str) -> StateDict:
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn('^' + pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointFormatError(
            f'unknown keys for a {fmt} Twins backbone: {_named(unknown)}')
    return out


def mmseg_to_official(state: StateDict) -> StateDict:
    """Convert an mmseg 1.x Twins backbone state dict to official names."""
    state = dict(state)
    out: StateDict = {}
    for key in [k for k in state if _IN_PROJ.match(k)]:
        i, j, kind = _IN_PROJ.match(key).groups()
        tensor = state.pop(key)
        if tensor.shape[0] % 3 or (kind == 'weight' and tensor.dim() != 2):
            raise CheckpointFormatError(
                f'{key} has shape {tuple(tensor.shape)}; expected (3C, C) '
                'or (3C,)')
        c = tensor.shape[0] // 3
        out[f'blocks.{i}.{j}.attn.q.{kind}'] = tensor[:c].clone()
        out[f'blocks.{i}.{j}.attn.kv.{kind}'] = tensor[c:].clone()
    # Leftovers of mmseg's own converter: the classifier's final norm/head.
    for key in [k for k in state if re.match(r'(norm|head)\.', k)]:
        out[key] = state.pop(key)
    out.update(_rename(state, _MMSEG_RENAMES, 'mmseg'))
    return out


def mmpretrain_to_official(state: StateDict) -> StateDict:
    """Convert an mmpretrain 1.x Twins backbone state dict to official names.

    ``norm_after_stage{i}`` become ``norm_list.{i}``, except when only the
    last stage has one: then it is the classifier's final ``norm``.
    """
    state = dict(state)
    out: StateDict = {}
    stage_norm = re.compile(r'norm_after_stage(\d+)\.(weight|bias)$')
    normed = sorted({int(stage_norm.match(k).group(1))
                     for k in state if stage_norm.match(k)})
    last = max((int(m.group(1)) for k in state
                if (m := re.match(r'patch_embeds\.(\d+)\.', k))),
               default=-1)
    for key in [k for k in state if stage_norm.match(k)]:
        i, kind = stage_norm.match(key).groups()
        name = 'norm' if normed == [last] else f'norm_list.{i}'
        out[f'{name}.{kind}'] = state.pop(key)
    for key in [k for k in state if k.startswith('head.')]:
        out[key.replace('head.fc.', 'head.')] = state.pop(key)
    out.update(_rename(state, _MMPRETRAIN_RENAMES, 'mmpretrain'))
    return out


def check_official(state: StateDict) -> StateDict:
    """Validate that every key is an official Twins backbone key."""
    unknown = [k for k in state if not _OFFICIAL_KEY.match(k)]
    if unknown:
        raise CheckpointFormatError(
            f'unknown keys for an official Twins backbone: {_named(unknown)}')
    for key in state:
        if key.endswith('attn.q.weight'):
            kv = key.replace('attn.q.', 'attn.kv.')
            if kv not in state or (state[kv].shape[0] !=
                                   2 * state[key].shape[0]):
                raise CheckpointFormatError(
                    f'{key} has no matching {kv} of twice its rows')
    return dict(state)


def official_to_mmseg(state: StateDict) -> StateDict:
    """Convert official names to mmseg 1.x names (inverse of the above).

    The classifier ``norm.*``/``head.*`` have no mmseg counterpart and are
    refused; drop them first (see :func:`drop_classifier`).
    """
    state = check_official(state)
    dead = [k for k in state if re.match(r'(norm|head)\.', k)]
    if dead:
        raise CheckpointFormatError(
            f'mmseg Twins has no classifier keys: {_named(dead)}')
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r'blocks\.(\d+)\.(\d+)\.(.*)$', key)
        if m is None:
            new = re.sub(r'^pos_block\.(\d+)\.proj\.0\.',
                         r'position_encodings.\1.proj.', key)
            new = re.sub(r'^patch_embeds\.(\d+)\.proj\.',
                         r'patch_embeds.\1.projection.', new)
            out[new] = value
            continue
        i, j, rest = m.groups()
        prefix = f'layers.{i}.{j}.'
        gsa = f'blocks.{i}.{j}.attn.q.weight' in state
        if rest.startswith('attn.q.'):
            kind = rest.rsplit('.', 1)[1]
            kv = state[f'blocks.{i}.{j}.attn.kv.{kind}']
            out[prefix + f'attn.attn.in_proj_{kind}'] = torch.cat([value, kv])
        elif rest.startswith('attn.kv.'):
            continue
        elif rest.startswith('attn.proj.') and gsa:
            out[prefix + 'attn.attn.out_proj.' + rest[10:]] = value
        elif rest.startswith('mlp.fc1.'):
            out[prefix + 'ffn.layers.0.0.' + rest[8:]] = value
        elif rest.startswith('mlp.fc2.'):
            out[prefix + 'ffn.layers.1.' + rest[8:]] = value
        else:
            out[prefix + rest] = value
    return out


def drop_classifier(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Remove the classifier's ``head.*`` and final ``norm.*`` keys."""
    dropped = [k for k in state if re.match(r'(norm|head)\.', k)]
    return {k: v for k, v in state.items() if k not in dropped}, dropped


def to_official(state: StateDict, src: str = 'auto') -> Tuple[StateDict, str]:
    """Convert a backbone state dict of any known layout to official names.

    Returns:
        tuple: the converted state dict and the source format.
    """
    if src != 'auto' and src not in FORMATS:
        raise CheckpointFormatError(
            f'unknown checkpoint format {src!r}; choose auto or one of '
            f'{FORMATS}')
    fmt = detect_format(state)
    if src not in ('auto', fmt):
        raise CheckpointFormatError(
            f'checkpoint keys are in {fmt} layout, not {src}')
    convert = {'mmseg': mmseg_to_official,
               'mmpretrain': mmpretrain_to_official}.get(fmt)
    out = convert(state) if convert else dict(state)
    return check_official(out), fmt


def convert_checkpoint(checkpoint: Mapping,
                       src: str = 'auto') -> Tuple[StateDict, dict]:
    """Convert a whole checkpoint file's content to mmtwins key names.

    Accepts raw, ``{'state_dict': ...}`` and ``{'model': ...}`` files, with
    or without the ``backbone.`` prefix of full detector/segmentor
    checkpoints. Keys outside ``backbone.`` (neck, heads) are kept as they
    are; the dead classifier ``norm``/``head`` of a dense-task backbone is
    dropped.

    Returns:
        tuple: the converted state dict (same prefix convention as the
        input) and a report dict with ``format``, ``dropped`` and
        ``num_backbone_keys``.
    """
    state = unwrap_state_dict(checkpoint)
    prefixed = any(k.startswith(BACKBONE_PREFIX) for k in state)
    backbone, rest = split_backbone(state)
    backbone, fmt = to_official(backbone, src)
    dropped: List[str] = []
    if prefixed:
        backbone, dropped = drop_classifier(backbone)
    prefix = BACKBONE_PREFIX if prefixed else ''
    out = {prefix + k: v for k, v in backbone.items()}
    out.update(rest)
    report = dict(
        format=fmt,
        dropped=[prefix + k for k in dropped],
        num_backbone_keys=len(backbone))
    return out, report
