"""Run a trained mmtwins model on images through mmdet's / mmseg's
inferencers, with the checks a user-facing demo needs.

:func:`build_inferencer` returns mmdet's ``DetInferencer`` or mmseg's
``MMSegInferencer`` (chosen by the config's ``default_scope``) for a config
file or a model-zoo name, with two differences from building them
directly:

* the checkpoint is loaded **strictly**: a checkpoint of another model
  (missing or unexpected parameters, other shapes) is refused with one line
  saying how far it is off, where the inferencers would warn and run with
  partly random weights;
* the class names and palette come from the checkpoint's ``dataset_meta``
  (what mmengine's Runner saves) or else from the config's test dataset,
  never from the COCO / Cityscapes defaults the inferencers fall back to.

The visualizer draws at most ``max_vis_size`` pixels on the longer side:
a larger picture is drawn downscaled (boxes, masks and label maps scaled
with it), so an 8000x8000 photo does not need a full-size drawing canvas.
The predictions themselves stay in input pixels.

:func:`resolve_config` turns a zoo name (a config's stem, e.g.
``retinanet_twins_pcpvt_s_1x_coco``) into its config path through
``configs/*/metafile.yml``; :func:`collect_images` expands an image, a
folder or a glob and sorts out the files that do not decode as images.

User mistakes raise :class:`InferenceInputError` (or
:class:`~mmtwins.errors.CheckpointError` for the checkpoint), both
:class:`~mmtwins.errors.InputError`, with a one-line message; the
command-line tools turn it into their ``error:`` line.
"""
from __future__ import annotations

import copy
import difflib
import glob
import os.path as osp
import warnings
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import yaml

from mmtwins.errors import CheckpointError, InputError
from mmtwins.utils.checkpoint_fit import (
    compare_state_dicts,
    read_checkpoint,
    require_finite,
    weights_of,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


class InferenceInputError(InputError, ValueError):
    """A user mistake (bad path, config or image) on one line."""


def zoo_configs(config_root: Optional[str] = None) -> Dict[str, str]:
    """``{config stem: config path}`` of every model in the metafiles."""
    root = config_root or osp.join(REPO_ROOT, 'configs')
    out: Dict[str, str] = {}
    for path in sorted(glob.glob(osp.join(root, '*', 'metafile.yml'))):
        with open(path) as f:
            meta = yaml.safe_load(f) or {}
        for model in meta.get('Models') or []:
            config = model.get('Config')
            if config:
                stem = osp.splitext(osp.basename(config))[0]
                out[stem] = osp.join(osp.dirname(root), config)
    return out


def resolve_config(name: str, config_root: Optional[str] = None) -> str:
    """A config file path for a path or a model-zoo name.

    An existing file is returned as it is; otherwise ``name`` (with or
    without ``.py``) is looked up among the metafile models.
    """
    if osp.isfile(name):
        return name
    stem = osp.splitext(osp.basename(name))[0]
    zoo = zoo_configs(config_root)
    if stem in zoo and osp.isfile(zoo[stem]):
        return zoo[stem]
    close = difflib.get_close_matches(stem, list(zoo), n=3, cutoff=0.6)
    hint = (f'; did you mean {", ".join(close)}?' if close else
            '; see configs/*/metafile.yml for the names')
    raise InferenceInputError(
        f'{name!r} is neither a config file nor a model-zoo name{hint}')


class ImageList(NamedTuple):
    """The images to process and the ``(path, reason)`` of the files that
    were skipped because they do not decode."""

    paths: List[str]
    unreadable: List[Tuple[str, str]]


def collect_images(pattern: str) -> ImageList:
    """The image files named by an image path, a folder or a glob.

    A folder gives its images (by extension, not recursive); a glob gives
    its matches that are files. The list is sorted. A file that does not
    decode is listed in ``unreadable`` (a single image path that does not
    decode is an error), and no two images may share a file name, because
    the outputs are named after it.
    """
    import mmcv

    if osp.isdir(pattern):
        paths = [p for p in glob.glob(osp.join(pattern, '*'))
                 if p.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(p)]
        if not paths:
            raise InferenceInputError(
                f'folder {pattern} holds no images (looked for '
                f'{", ".join(IMAGE_EXTENSIONS)})')
    elif osp.isfile(pattern):
        paths = [pattern]
    else:
        paths = [p for p in glob.glob(pattern) if osp.isfile(p)]
        if not paths:
            raise InferenceInputError(
                f'no image, folder or glob matches found for {pattern}')
    single = osp.isfile(pattern)
    good: List[str] = []
    bad: List[Tuple[str, str]] = []
    seen: Dict[str, str] = {}
    for path in sorted(paths):
        reason = _unreadable(path, mmcv)
        if reason:
            if single:
                raise InferenceInputError(
                    f'cannot read {path} as an image ({reason}); pass image '
                    'files only')
            bad.append((path, reason))
            continue
        good.append(path)
        name = osp.basename(path)
        if name in seen:
            raise InferenceInputError(
                f'{seen[name]} and {path} have the same file name and would '
                'overwrite each other\'s outputs; run them separately')
        seen[name] = path
    return ImageList(good, bad)


def _unreadable(path: str, mmcv) -> Optional[str]:
    """Why ``path`` does not decode as an image, or None if it does."""
    try:
        with open(path, 'rb') as f:
            head = f.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not head:
        return 'empty file'
    try:
        img = mmcv.imread(path)
    except Exception:  # OpenCV/Pillow errors differ by backend
        img = None
    return None if img is not None else 'unsupported or damaged file'


def check_state_dict(model, state: Mapping[str, Any], checkpoint: str,
                     config: str) -> None:
    """Refuse a state dict that does not fit ``model`` exactly."""
    diff = compare_state_dicts(model.state_dict(), state)
    if diff:
        raise CheckpointError(
            f'checkpoint {checkpoint} is not a checkpoint of {config}: '
            f'{diff.summary()}; pass the checkpoint trained with this '
            'config')


def dataset_meta(checkpoint: Mapping[str, Any], cfg) -> Dict[str, Any]:
    """``classes`` and ``palette`` (when known): the checkpoint's
    ``dataset_meta`` if it has one, else the metainfo of the config's test
    dataset. Only these two keys, which both visualizers accept."""
    meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    if meta and (meta.get('classes') or meta.get('CLASSES')):
        meta = {k.lower(): v for k, v in meta.items()}
    else:
        from mmengine.registry import DATASETS, init_default_scope
        init_default_scope(cfg.get('default_scope'))
        ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
        while 'dataset' in ds_cfg:  # dataset wrappers
            ds_cfg = ds_cfg['dataset']
        ds_cfg['lazy_init'] = True
        meta = dict(DATASETS.build(ds_cfg).metainfo)
    return {k: meta[k] for k in ('classes', 'palette') if meta.get(k)}


#: Longest side, in pixels, of the pictures the tools draw.
MAX_VIS_SIZE = 2000


def _scaled_sample(sample: Any, scale: float, shape: Tuple[int, int]):
    """A copy of a det/seg data sample with its predictions scaled to a
    picture of ``shape`` (only the fields the visualizers draw)."""
    import cv2
    import numpy as np
    import torch
    out = sample.__class__(metainfo=dict(sample.metainfo))
    h, w = shape
    if 'pred_instances' in sample:
        from mmengine.structures import InstanceData
        inst = InstanceData(
            metainfo=dict(sample.pred_instances.metainfo),
            **{k: v for k, v in sample.pred_instances.items()
               if k != 'masks'})
        if 'bboxes' in inst:
            inst.bboxes = inst.bboxes * scale
        masks = sample.pred_instances.get('masks')
        if masks is not None:
            small = [cv2.resize(np.asarray(m.cpu() if torch.is_tensor(m)
                                           else m, dtype=np.uint8), (w, h),
                                interpolation=cv2.INTER_NEAREST)
                     for m in masks]
            inst.masks = torch.from_numpy(np.stack(small).astype(bool)) \
                if small else torch.zeros(0, h, w, dtype=torch.bool)
        out.pred_instances = inst
    if 'pred_sem_seg' in sample:
        from mmengine.structures import PixelData
        labels = sample.pred_sem_seg.data[0].cpu().numpy()
        small = cv2.resize(labels.astype(np.int32), (w, h),
                           interpolation=cv2.INTER_NEAREST)
        out.pred_sem_seg = PixelData(
            data=torch.from_numpy(small.astype(labels.dtype))[None])
    return out


def cap_drawing_size(visualizer: Any, max_size: int = MAX_VIS_SIZE) -> None:
    """Make ``visualizer.add_datasample`` draw pictures larger than
    ``max_size`` pixels (longer side) downscaled, predictions included."""
    import mmcv
    draw = visualizer.add_datasample

    def add_datasample(name, image, data_sample=None, *args, **kwargs):
        scale = max_size / max(image.shape[:2])
        if scale < 1:
            image = mmcv.imrescale(image, scale)
            if data_sample is not None:
                data_sample = _scaled_sample(data_sample, scale,
                                             image.shape[:2])
        return draw(name, image, data_sample, *args, **kwargs)

    visualizer.add_datasample = add_datasample


def _strict_class(base: type) -> type:
    """``base`` (an inferencer class) whose model loads strictly."""

    class Strict(base):
        def __init__(self, *args, state_dict: Dict[str, Any],
                     meta: Dict[str, Any], names: Tuple[str, str],
                     **kwargs) -> None:
            self._strict_state = state_dict
            self._strict_meta = meta
            self._strict_names = names
            super().__init__(*args, **kwargs)

        def _init_model(self, cfg, weights, device='cpu'):
            with warnings.catch_warnings():  # the "no weights" warnings
                warnings.simplefilter('ignore')
                model = super()._init_model(cfg, None, device)
            check_state_dict(model, self._strict_state, *self._strict_names)
            model.load_state_dict(self._strict_state, strict=True)
            meta = dict(self._strict_meta)
            meta.setdefault('palette', model.dataset_meta.get('palette'))
            model.dataset_meta = meta
            return model

    Strict.__name__ = Strict.__qualname__ = f'Strict{base.__name__}'
    return Strict


def build_inferencer(cfg, config_path: str, checkpoint: str,
                     device: Optional[str] = None,
                     max_vis_size: int = MAX_VIS_SIZE):
    """``(task, inferencer)`` for a loaded config and a checkpoint path.

    Args:
        cfg (mmengine.Config): The model's config.
        config_path (str): Where ``cfg`` came from (for messages).
        checkpoint (str): Checkpoint file; must fit the model exactly.
        device (str, optional): ``'cpu'``, ``'cuda'``, ``'cuda:1'``...;
            None picks the available one.
        max_vis_size (int): longest side of the drawn pictures.
    """
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise InferenceInputError(
            f'config {config_path} has default_scope {scope!r}; mmtwins '
            "inference needs 'mmdet' or 'mmseg'")
    ckpt = read_checkpoint(checkpoint)
    state = weights_of(ckpt)
    require_finite(state, checkpoint)
    meta = dataset_meta(ckpt, cfg)
    kwargs = dict(state_dict=state, meta=meta,
                  names=(checkpoint, config_path))
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = _strict_class(DetInferencer)(
            model=cfg, weights=None, device=device, **kwargs)
    else:
        from mmseg.apis import MMSegInferencer
        inferencer = _strict_class(MMSegInferencer)(
            model=cfg, weights=None, device=device,
            classes=meta.get('classes'), palette=meta.get('palette'),
            **kwargs)
    cap_drawing_size(inferencer.visualizer, max_vis_size)
    return TASKS[scope], inferencer
