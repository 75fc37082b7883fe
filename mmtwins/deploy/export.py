"""Export a built mmdet / mmseg model end to end and describe the file.

:func:`deploy_module` picks the end-to-end module for a model;
:func:`export_end_to_end` exports it with PyTorch's dynamo exporter
(dynamic batch, height and width; NMS as ONNX ``NonMaxSuppression``) and
writes into the file's metadata what a runner needs to check that the file
belongs to a config (:func:`model_fingerprint`) and to feed it (task,
class names, output names, mean pixel, size divisor).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Dict, Sequence, Tuple

import torch
from torch import nn

from .detector import DenseDetectorExport, UnsupportedModel
from .nms import ONNX_TRANSLATIONS
from .preprocess import preprocess_params
from .roi_align import ONNX_TRANSLATIONS as ROI_TRANSLATIONS
from .segmentor import SegmentorExport, symbolic_upsample

META_PREFIX = 'mmtwins.'
INPUT_NAME = 'images'
MAX_SIZE = 4096
MAX_BATCH = 256


def _drop_init(value: Any) -> Any:
    """``value`` without ``init_cfg`` / ``pretrained`` entries (they say
    where weights come from, not what the model computes)."""
    if isinstance(value, dict):
        return {k: _drop_init(v) for k, v in value.items()
                if k not in ('init_cfg', 'pretrained')}
    if isinstance(value, (list, tuple)):
        return [_drop_init(v) for v in value]
    return value


def model_fingerprint(model_cfg: Any) -> str:
    """A short hash of a config's ``model`` settings (weights sources
    left out): equal for configs that build the same computation."""
    if hasattr(model_cfg, 'to_dict'):
        model_cfg = model_cfg.to_dict()
    text = json.dumps(_drop_init(model_cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _size_oblivious():
    import torch.fx.experimental._config as fx_config
    return fx_config.patch(backed_size_oblivious=True)


def deploy_module(model: nn.Module) -> Tuple[str, nn.Module]:
    """``(task, module)``: the end-to-end module for an mmdet detector or
    an mmseg segmentor; :class:`UnsupportedModel` for anything else."""
    if hasattr(model, 'roi_head') and hasattr(model, 'rpn_head'):
        from .two_stage import TwoStageExport
        return 'detection', TwoStageExport(model)
    if hasattr(model, 'bbox_head'):
        return 'detection', DenseDetectorExport(model)
    if hasattr(model, 'decode_head'):
        return 'segmentation', SegmentorExport(model)
    raise UnsupportedModel(f'{type(model).__name__} has no end-to-end '
                           'export (supported: one-stage anchor detectors, '
                           'Mask R-CNN, encoder-decoder segmentors)')


def has_sasa_attention(model: nn.Module) -> bool:
    """Whether ``model`` has SASA attention layers, which ``sasa_kernel``
    of :func:`export_end_to_end` concerns."""
    from mmtwins.models.layers import SASAttention
    return any(isinstance(m, SASAttention) for m in model.modules())


def export_end_to_end(model: nn.Module, path: str,
                      size: Tuple[int, int], *, config: str,
                      model_cfg: Any, classes: Sequence[str],
                      min_size: int = 64,
                      sasa_kernel: bool = False) -> Dict[str, str]:
    """Export ``model`` (eval mode) to ``path``; return the metadata
    written into it.

    The example input is a batch of 2 random pixel images at ``size``
    (batch 2: a size-1 example would fix the batch to 1). Heights and
    widths from ``min_size`` (64: the stride-32 level must be at least 2
    pixels for the backbones' convolutions) to 4096 are accepted.

    SASA layers become standard ONNX operators (any runtime), or with
    ``sasa_kernel=True`` one ``mmtwins.SASAttention`` node each: the fused
    kernel as an onnxruntime custom operator, faster in onnxruntime, which
    needs mmtwins' operator library (:mod:`mmtwins.ops.sasa_ort`;
    :func:`mmtwins.deploy.runtime.create_session` registers it).
    """
    from torch.export import Dim

    task, module = deploy_module(model)
    module = module.eval()
    x = torch.rand(2, 3, *size) * 255
    shapes = ({0: Dim('batch', min=1, max=MAX_BATCH),
               2: Dim('height', min=min_size, max=MAX_SIZE),
               3: Dim('width', min=min_size, max=MAX_SIZE)}, )
    # Size-oblivious tracing: the exporter does not ask whether a dynamic
    # size is 1 (for strides and view checks of the smallest pyramid
    # levels), which would otherwise tie the graph to the example's sizes.
    rewrites = symbolic_upsample() if task == 'segmentation' else \
        contextlib.nullcontext()
    translations = {**ONNX_TRANSLATIONS, **ROI_TRANSLATIONS}
    if sasa_kernel:
        from mmtwins.ops.sasa_export import kernel_translations
        translations.update(kernel_translations())
    with torch.no_grad(), _size_oblivious(), rewrites:
        program = torch.onnx.export(
            module, (x, ), None, dynamo=True, dynamic_shapes=shapes,
            input_names=[INPUT_NAME],
            output_names=list(module.output_names),
            custom_translation_table=translations, verbose=False)
    params = preprocess_params(model.data_preprocessor)
    meta = {
        'task': task,
        'model': type(model).__name__,
        'config': config,
        'fingerprint': model_fingerprint(model_cfg),
        'classes': json.dumps(list(classes)),
        'outputs': ','.join(module.output_names),
        'preprocess': json.dumps(params),
    }
    if task == 'detection':
        meta['max_per_img'] = str(int(
            (getattr(model, 'bbox_head', None) and model.bbox_head.test_cfg
             or model.roi_head.test_cfg).max_per_img))
    if hasattr(module, 'mask_layout'):
        meta['masks'] = module.mask_layout
    full = {META_PREFIX + k: v for k, v in meta.items()}
    program.model.metadata_props.update(full)
    program.save(path)
    return full
