"""Run an end-to-end ONNX file with onnxruntime inside mmengine.

:class:`ONNXRuntimeModel` is an mmengine ``BaseModel`` whose ``predict``
pads the test pipeline's images into one batch (:func:`pad_batch`), runs
the file and returns mmdet ``DetDataSample`` / mmseg ``SegDataSample``
predictions rescaled to the original images, as the PyTorch models do:
boxes are clipped to the resized image and divided by its
``scale_factor``; class maps are cropped to the resized image and resized
(nearest) to the original size. mmengine's ``Runner.test()``, the
evaluators, ``--out`` dumps, visualisation hooks and the inferencers then
work as with a checkpoint.

:func:`read_metadata` and :func:`check_matches_config` refuse a file that
was not written by the end-to-end exporter, or that was exported from a
config whose model differs, with one-line
:class:`~mmtwins.errors.InputError` messages.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.model import BaseModel

from mmtwins.errors import InputError
from mmtwins.registry import MODELS

from .export import INPUT_NAME, META_PREFIX, model_fingerprint
from .preprocess import pad_batch
from .runtime import OperatorLibraryError, create_session

EXPORT_HINT = ('export it with `python tools/deployment/pytorch2onnx.py '
               'CONFIG CHECKPOINT`')


class ONNXFileError(InputError, ValueError):
    """An ONNX file that cannot be used with the given config."""


def read_metadata(path: str) -> Dict[str, str]:
    """The ``mmtwins.*`` metadata of an ONNX file (prefix removed)."""
    import onnx
    if not osp.isfile(path):
        raise ONNXFileError(f'ONNX file not found: {path}')
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several types
        raise ONNXFileError(
            f'{path} is not a readable ONNX file ({type(exc).__name__}); '
            f'{EXPORT_HINT}') from None
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}
    if 'fingerprint' not in meta or 'task' not in meta:
        raise ONNXFileError(
            f'{path} is not an end-to-end mmtwins model (no {META_PREFIX}* '
            f'metadata); {EXPORT_HINT}')
    return meta


def check_matches_config(meta: Dict[str, str], cfg, path: str,
                         config: str) -> None:
    """Refuse a file whose model settings differ from ``cfg.model``."""
    if meta['fingerprint'] != model_fingerprint(cfg.model):
        raise ONNXFileError(
            f'{path} was exported from {meta.get("config", "?")} '
            f'({meta.get("model", "?")}), whose model settings differ from '
            f'{config}; pass the config it was exported from, or export '
            'this config')


@MODELS.register_module()
class ONNXRuntimeModel(BaseModel):
    """An end-to-end ONNX file as an mmengine model (prediction only).

    Args:
        onnx_file (str): File written by
            :func:`mmtwins.deploy.export.export_end_to_end`.
        num_threads (int, optional): onnxruntime intra-op threads (default:
            onnxruntime's choice).
        dataset_meta (dict, optional): ``classes``/``palette``; default:
            the class names stored in the file.
    """

    def __init__(self, onnx_file: str, num_threads: Optional[int] = None,
                 dataset_meta: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor
            or dict(type='mmengine.BaseDataPreprocessor'),
            init_cfg=init_cfg)
        self.onnx_file = onnx_file
        self.meta = read_metadata(onnx_file)
        self.task = self.meta['task']
        self.params = json.loads(self.meta['preprocess'])
        try:
            self.session = create_session(onnx_file, num_threads)
        except OperatorLibraryError:
            raise
        except Exception as exc:  # onnxruntime's own error types
            raise ONNXFileError(
                f'onnxruntime cannot load {onnx_file}: '
                f'{str(exc).splitlines()[0][:200]}') from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.dataset_meta = dataset_meta or dict(
            classes=tuple(json.loads(self.meta['classes'])))
        # Keeps mmengine's device handling working for a weightless model.
        self.register_buffer('_anchor', torch.zeros(()), persistent=False)

    def run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """The file's outputs for a float32 pixel batch (N, 3, H, W)."""
        outs = self.session.run(None, {INPUT_NAME: batch})
        return dict(zip(self.output_names, outs))

    def forward(self, inputs: List[torch.Tensor],
                data_samples: Optional[list] = None,
                mode: str = 'predict') -> Any:
        if mode != 'predict':
            raise ONNXFileError(f'an ONNX model only predicts (mode '
                                f'{mode!r} asked)')
        batch, sizes = pad_batch(inputs, self.params)
        outs = self.run(batch)
        outs['images_shape'] = batch.shape[2:]
        if data_samples is None:
            data_samples = [None] * len(inputs)
        if self.task == 'detection':
            return [self._detections(outs, i, sample, sizes[i])
                    for i, sample in enumerate(data_samples)]
        return [self._segmentation(outs, i, sample, sizes[i])
                for i, sample in enumerate(data_samples)]

    def _detections(self, outs, i: int, sample, size):
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        sample = sample if sample is not None else DetDataSample()
        # What mmdet's DetDataPreprocessor does to the samples (box types
        # as tensors, the batch's input shape), which the visualiser and
        # metrics expect.
        from mmdet.models.utils import samplelist_boxtype2tensor
        samplelist_boxtype2tensor([sample])
        batch_shape = tuple(int(v) for v in outs['images_shape'])
        sample.set_metainfo(dict(batch_input_shape=batch_shape,
                                 pad_shape=batch_shape))
        keep = outs['labels'][i] >= 0
        dets = torch.from_numpy(outs['dets'][i][keep].copy())
        boxes = dets[:, :4]
        h, w = sample.metainfo.get('img_shape', size)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        scale = sample.metainfo.get('scale_factor')
        if scale is not None:
            boxes = boxes / boxes.new_tensor(scale).repeat(2)
        pred = InstanceData()
        pred.bboxes = boxes
        pred.scores = dets[:, 4]
        pred.labels = torch.from_numpy(outs['labels'][i][keep].copy())
        if 'masks' in outs:
            from .masks import masks_for_image
            pred.masks = masks_for_image(
                outs['masks'][i][keep], outs['dets'][i][keep],
                self.meta.get('masks', 'roi'), size, sample.metainfo)
        sample.pred_instances = pred
        return sample

    def _segmentation(self, outs, i: int, sample, size):
        import torch.nn.functional as F
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        sample = sample if sample is not None else SegDataSample()
        h, w = sample.metainfo.get('img_shape', size)
        seg = torch.from_numpy(outs['seg'][i][:h, :w].copy())
        ori = sample.metainfo.get('ori_shape', (h, w))
        if tuple(ori[:2]) != (h, w):
            seg = F.interpolate(seg[None, None].float(), size=ori[:2],
                                mode='nearest')[0, 0].long()
        sample.set_data(dict(pred_sem_seg=PixelData(data=seg[None])))
        return sample


def onnx_model_cfg(onnx_file: str, cfg, config: str,
                   num_threads: Optional[int] = None) -> Dict[str, Any]:
    """``cfg.model`` replacement that runs ``onnx_file``, after checking
    that the file belongs to ``cfg`` (:class:`ONNXFileError` if not)."""
    meta = read_metadata(onnx_file)
    check_matches_config(meta, cfg, onnx_file, config)
    threads = num_threads or int(os.environ.get('MMTWINS_ORT_THREADS', 0))
    # The pixels go to the file as loaded: no mmdet/mmseg preprocessor (an
    # explicit one also keeps mmengine's Runner from filling in a
    # config's top-level ``data_preprocessor``, as mmseg configs have).
    return dict(type='mmtwins.ONNXRuntimeModel',
                onnx_file=osp.abspath(onnx_file), num_threads=threads or None,
                data_preprocessor=dict(type='mmengine.BaseDataPreprocessor'))
