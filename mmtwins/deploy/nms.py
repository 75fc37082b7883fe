"""Batched multi-class NMS as one graph node with fixed-size outputs.

:func:`nms_keep` (``torch.ops.mmtwins.nms_keep``) is a ``torch.library``
custom op: for a batch of boxes ``(N, M, 4)`` and scores ``(N, M)`` it
returns a ``(N, M)`` mask of the boxes that greedy NMS keeps (boxes whose
score is not above ``score_threshold`` are never kept). Its output has the
input's shape, so tracing and ``torch.export`` see no data-dependent size.
On the CPU it runs mmcv's ``nms``; for the dynamo ONNX exporter
:data:`ONNX_TRANSLATIONS` maps it to ONNX ``NonMaxSuppression`` followed by
a scatter into the mask.

:func:`multiclass_nms` does per-class NMS the way mmcv's ``batched_nms``
does (each class shifted by ``label * (largest coordinate + 1)`` so that
boxes of different classes never overlap), then keeps the ``max_num``
highest-scoring survivors per image in a padded ``(N, max_num)`` layout:
rows past the detections have score 0, label -1 and a zero box.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch


@torch.library.custom_op('mmtwins::nms_keep', mutates_args=())
def nms_keep(boxes: torch.Tensor, scores: torch.Tensor,
             iou_threshold: float, score_threshold: float) -> torch.Tensor:
    """Greedy NMS per image: a bool ``(N, M)`` mask of the kept boxes.

    Args:
        boxes: ``(N, M, 4)`` x1, y1, x2, y2.
        scores: ``(N, M)``.
        iou_threshold: a box is dropped when its IoU with a kept box of
            higher score is above this.
        score_threshold: only boxes scoring above this take part.
    """
    from mmcv.ops import nms
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for i in range(scores.shape[0]):
        idx = torch.nonzero(scores[i] > score_threshold).flatten()
        if idx.numel() == 0:
            continue
        _, kept = nms(boxes[i, idx].float().contiguous(),
                      scores[i, idx].float().contiguous(), iou_threshold)
        keep[i, idx[kept]] = True
    return keep


@nms_keep.register_fake
def _nms_keep_fake(boxes: torch.Tensor, scores: torch.Tensor,
                   iou_threshold: float,
                   score_threshold: float) -> torch.Tensor:
    return scores.new_empty(scores.shape, dtype=torch.bool)


def _nms_keep_onnx(boxes, scores, iou_threshold: float,
                   score_threshold: float):
    """ONNX for :func:`nms_keep`: ``NonMaxSuppression`` (one class per
    image, every box may be kept), then the selected (image, box) pairs
    scattered into a boolean mask."""
    from onnxscript import opset18 as op
    num_boxes = op.Squeeze(op.Shape(boxes, start=1, end=2), [0])
    selected = op.NonMaxSuppression(
        boxes, op.Unsqueeze(scores, [1]), num_boxes,
        op.Constant(value_float=float(iou_threshold)),
        op.Constant(value_float=float(score_threshold)),
        center_point_box=0)
    pairs = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)
    zeros = op.CastLike(op.ConstantOfShape(op.Shape(scores)), scores)
    ones = op.Expand(op.CastLike(op.Constant(value_float=1.0), scores),
                     op.Shape(selected, start=0, end=1))
    mask = op.ScatterND(zeros, pairs, ones)
    return op.Cast(mask, to=9)  # BOOL


#: ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``.
ONNX_TRANSLATIONS: Dict[object, Callable] = {
    torch.ops.mmtwins.nms_keep.default: _nms_keep_onnx,
}


def class_offset_boxes(boxes: torch.Tensor, labels: torch.Tensor,
                       valid: torch.Tensor) -> torch.Tensor:
    """``boxes`` shifted by ``label * (largest valid coordinate + 1)`` per
    image, as mmcv's ``batched_nms`` does, so that one NMS over all
    classes never lets boxes of different classes suppress each other."""
    floor = torch.finfo(boxes.dtype).min
    masked = torch.where(valid.unsqueeze(-1), boxes,
                         boxes.new_full((), floor))
    largest = masked.amax(dim=(1, 2), keepdim=True).clamp(min=0)
    offsets = labels.to(boxes.dtype).unsqueeze(-1) * (largest + 1)
    return boxes + offsets


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor,
                   labels: torch.Tensor, valid: torch.Tensor,
                   iou_threshold: float, max_num: int
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class NMS and the ``max_num`` best survivors per image.

    Args:
        boxes: ``(N, M, 4)`` candidates.
        scores: ``(N, M)``.
        labels: ``(N, M)`` integer classes.
        valid: ``(N, M)`` bool, the candidates that take part.
        iou_threshold: NMS IoU threshold.
        max_num: K, the number of output rows per image.

    Returns:
        ``dets`` ``(N, K, 5)`` (x1, y1, x2, y2, score; best first) and
        ``labels`` ``(N, K)`` int64; padded rows are zeros with label -1.
    """
    n = boxes.shape[0]
    # K padding candidates make M >= K for every input size.
    boxes = torch.cat([boxes, boxes.new_zeros(n, max_num, 4)], dim=1)
    scores = torch.cat([scores, scores.new_zeros(n, max_num)], dim=1)
    labels = torch.cat([labels, labels.new_zeros(n, max_num)], dim=1)
    valid = torch.cat([valid, valid.new_zeros(n, max_num)], dim=1)
    # Candidates that do not take part score -1 (scores are >= 0).
    ranked = torch.where(valid, scores, scores.new_full((), -1.))
    keep = nms_keep(class_offset_boxes(boxes, labels, valid), ranked,
                    iou_threshold, -0.5)
    ranked = torch.where(keep, ranked, ranked.new_full((), -1.))
    top, idx = ranked.topk(max_num, dim=1)
    found = top >= 0
    out_boxes = boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
    out_boxes = torch.where(found.unsqueeze(-1), out_boxes,
                            out_boxes.new_zeros(()))
    out_scores = torch.where(found, top, top.new_zeros(()))
    out_labels = torch.where(found, labels.gather(1, idx).long(),
                             torch.full_like(idx, -1))
    dets = torch.cat([out_boxes, out_scores.unsqueeze(-1)], dim=-1)
    return dets, out_labels
