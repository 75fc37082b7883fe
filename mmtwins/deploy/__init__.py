"""Whole-model deployment: end-to-end ONNX export of mmdet detectors and
mmseg segmentors (pre- and post-processing in the graph, NMS as ONNX
``NonMaxSuppression``) and an onnxruntime model for mmengine's runners
and the inferencers."""
from .detector import DenseDetectorExport, UnsupportedModel
from .export import deploy_module, export_end_to_end, model_fingerprint
from .nms import multiclass_nms, nms_keep
from .onnx_model import (
    ONNXFileError,
    ONNXRuntimeModel,
    check_matches_config,
    onnx_model_cfg,
    read_metadata,
)
from .segmentor import SegmentorExport

__all__ = [
    'DenseDetectorExport', 'ONNXFileError', 'ONNXRuntimeModel',
    'SegmentorExport', 'UnsupportedModel', 'check_matches_config',
    'deploy_module', 'export_end_to_end', 'model_fingerprint',
    'multiclass_nms', 'nms_keep', 'onnx_model_cfg', 'read_metadata'
]
