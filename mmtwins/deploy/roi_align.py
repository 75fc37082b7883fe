"""RoIAlign as one graph node: ``torch.ops.mmtwins.roi_align``.

On the CPU it runs mmcv's ``roi_align`` (average pooling); for the dynamo
ONNX exporter :data:`ONNX_TRANSLATIONS` maps it to ONNX ``RoiAlign``
(``coordinate_transformation_mode`` ``half_pixel`` for ``aligned=True``,
as mmcv's ``aligned`` shifts by half a pixel). ``rois`` are (R, 5):
batch index, x1, y1, x2, y2 in input pixels.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch


@torch.library.custom_op('mmtwins::roi_align', mutates_args=())
def roi_align(features: torch.Tensor, rois: torch.Tensor,
              output_size: List[int], spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """(R, C, oh, ow) average RoIAlign of ``features`` (N, C, H, W)."""
    from mmcv.ops import roi_align as mmcv_roi_align
    if rois.shape[0] == 0:
        return features.new_zeros(0, features.shape[1], *output_size)
    return mmcv_roi_align(features.contiguous(), rois.contiguous(),
                          tuple(output_size), spatial_scale, sampling_ratio,
                          'avg', aligned)


@roi_align.register_fake
def _roi_align_fake(features, rois, output_size, spatial_scale,
                    sampling_ratio, aligned):
    return features.new_empty(rois.shape[0], features.shape[1],
                              *output_size)


def _roi_align_onnx(features, rois, output_size: List[int],
                    spatial_scale: float, sampling_ratio: int,
                    aligned: bool):
    from onnxscript import opset18 as op
    boxes = op.Slice(rois, [1], [5], [1])
    batch = op.Cast(op.Reshape(op.Slice(rois, [0], [1], [1]), [-1]), to=7)
    return op.RoiAlign(
        features, boxes, batch, mode='avg',
        output_height=int(output_size[0]), output_width=int(output_size[1]),
        sampling_ratio=int(sampling_ratio),
        spatial_scale=float(spatial_scale),
        coordinate_transformation_mode='half_pixel' if aligned
        else 'output_half_pixel')


#: ``custom_translation_table`` entries for the exporter.
ONNX_TRANSLATIONS: Dict[object, Callable] = {
    torch.ops.mmtwins.roi_align.default: _roi_align_onnx,
}
