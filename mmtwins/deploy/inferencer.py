"""mmdet's ``DetInferencer`` / mmseg's ``MMSegInferencer`` running an
end-to-end ONNX file through onnxruntime instead of a checkpoint.

The config gives the test pipeline, the visualiser and the class names
and palette; the file must have been exported from that config
(:func:`~mmtwins.deploy.onnx_model.check_matches_config`).
"""
from __future__ import annotations

from typing import Optional, Tuple

from mmtwins.utils.inference import (
    MAX_VIS_SIZE,
    TASKS,
    InferenceInputError,
    cap_drawing_size,
    dataset_meta,
)

from .onnx_model import ONNXRuntimeModel, onnx_model_cfg


def _onnx_class(base: type, onnx_cfg: dict, meta: dict) -> type:
    """``base`` whose model is the ONNX file."""

    class OnnxInferencer(base):

        def _init_model(self, cfg, weights, device='cpu'):
            kwargs = {k: v for k, v in onnx_cfg.items() if k != 'type'}
            model = ONNXRuntimeModel(**kwargs, dataset_meta=dict(meta))
            model.cfg = cfg
            return model.eval()

    OnnxInferencer.__name__ = OnnxInferencer.__qualname__ = \
        f'Onnx{base.__name__}'
    return OnnxInferencer


def build_onnx_inferencer(cfg, config_path: str, onnx_file: str,
                          device: Optional[str] = None,
                          max_vis_size: int = MAX_VIS_SIZE
                          ) -> Tuple[str, object]:
    """``(task, inferencer)`` for a config and an ONNX file exported from
    it (the same call as :func:`mmtwins.utils.inference.build_inferencer`;
    onnxruntime runs on the CPU whatever ``device`` says). Drawings are at
    most ``max_vis_size`` pixels on the longer side, as with a checkpoint.
    """
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise InferenceInputError(
            f'config {config_path} has default_scope {scope!r}; mmtwins '
            "inference needs 'mmdet' or 'mmseg'")
    onnx_cfg = onnx_model_cfg(onnx_file, cfg, config_path)
    meta = dataset_meta({}, cfg)
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = _onnx_class(DetInferencer, onnx_cfg, meta)(
            model=cfg, weights=None, device='cpu')
    else:
        from mmseg.apis import MMSegInferencer
        inferencer = _onnx_class(MMSegInferencer, onnx_cfg, meta)(
            model=cfg, weights=None, device='cpu',
            classes=meta.get('classes'), palette=meta.get('palette'))
    cap_drawing_size(inferencer.visualizer, max_vis_size)
    return TASKS[scope], inferencer
