"""One-stage detectors (RetinaNet and other anchor heads) as one module
from pixel images to final detections.

:class:`DenseDetectorExport` runs normalisation, backbone, neck and head,
then mmdet's test-time post-processing for every image of the batch at
once: priors for the input size, the per-level ``nms_pre`` top-k over
(prior, class) scores above ``score_thr`` (``filter_scores_and_topk``),
box decoding clipped to the input, the ``min_bbox_size`` filter,
per-class NMS with the config's IoU threshold and the final
``max_per_img`` rows. Every size is fixed by the input's shape, so the
module exports with dynamic batch, height and width.

Outputs: ``dets`` (N, K, 5) x1, y1, x2, y2, score in input pixels, best
first, and ``labels`` (N, K) int64; rows past the detections are zeros
with label -1. K is ``test_cfg.max_per_img``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from .nms import multiclass_nms
from .preprocess import Normalize, preprocess_params


class UnsupportedModel(ValueError):
    """The model has no end-to-end export (one-line message)."""


def check_dense_head(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModel` unless ``model`` is a one-stage
    detector whose head this module can post-process."""
    head = getattr(model, 'bbox_head', None)
    name = type(head).__name__ if head is not None else 'none'
    missing = [a for a in ('prior_generator', 'bbox_coder', 'test_cfg')
               if getattr(head, a, None) is None]
    if head is None or missing or not getattr(head, 'use_sigmoid_cls',
                                                 False):
        raise UnsupportedModel(
            f'{type(model).__name__} with bbox head {name} has no '
            'end-to-end export (supported: anchor heads with sigmoid '
            'classification such as RetinaHead, Mask R-CNN, EncoderDecoder '
            'segmentors)')
    if getattr(head.prior_generator, 'num_base_priors', None) is None:
        raise UnsupportedModel(f'{name}: its prior generator has no '
                               'num_base_priors')
    if type(head.bbox_coder).__name__ != 'DeltaXYWHBBoxCoder':
        raise UnsupportedModel(
            f'{name} decodes with {type(head.bbox_coder).__name__}; the '
            'end-to-end export supports DeltaXYWHBBoxCoder')
    if (head.test_cfg.get('nms') or {}).get('type', 'nms') != 'nms':
        raise UnsupportedModel(
            f'{name}: test_cfg.nms type {head.test_cfg.nms.type!r} has no '
            'export; use type=\'nms\'')


def clip_boxes(boxes: torch.Tensor, height: torch.Tensor,
               width: torch.Tensor) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height] (0-dim tensors)."""
    x = boxes[..., 0::2].clamp(min=0)
    y = boxes[..., 1::2].clamp(min=0)
    x = torch.minimum(x, width)
    y = torch.minimum(y, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def input_size(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The input's height and width as 0-dim float tensors (symbolic
    under export)."""
    ones = images.new_ones(images.shape[2:])
    return ones.sum(0)[0], ones.sum(1)[0]


def channels_last_rows(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> a contiguous (N, H, W, C) copy.

    An explicit copy: reshaping the permuted view would make the exporter
    decide whether H or W is 1 (whether the view is possible), which ties
    the traced graph to sizes where the smallest level has the same
    shape.
    """
    return maps.permute(0, 2, 3, 1).clone(
        memory_format=torch.contiguous_format)


def top_k_padded(scores: torch.Tensor, score_thr: float, k: int
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best scores above ``score_thr`` per row and their
    indices; where a row has fewer, the rest score -1 (index clamped).

    The row is padded to at least ``k`` entries first, so that ``k`` is
    fixed whatever the input size (``min(k, len)`` would tie the traced
    graph to the sizes where the same levels are shorter than ``k``).
    """
    n, length = scores.shape
    masked = torch.where(scores > score_thr, scores,
                         scores.new_full((), -1.))
    masked = torch.cat([masked, masked.new_full((n, k), -1.)], dim=1)
    top, idx = masked.topk(k, dim=1)
    return top, idx.clamp(max=length - 1)


def dense_candidates(head: nn.Module, cls_scores: List[torch.Tensor],
                     bbox_preds: List[torch.Tensor], height: torch.Tensor,
                     width: torch.Tensor, cfg) -> Tuple[torch.Tensor, ...]:
    """Per image: boxes, scores, labels and validity of every level's
    ``nms_pre`` best (prior, class) pairs, as mmdet's
    ``_predict_by_feat_single`` selects them, concatenated over levels."""
    n = cls_scores[0].shape[0]
    num_classes = head.cls_out_channels
    score_thr = float(cfg.get('score_thr', 0))
    nms_pre = int(cfg.get('nms_pre', -1))
    min_size = cfg.get('min_bbox_size', -1)
    sizes = [c.shape[-2:] for c in cls_scores]
    priors = head.prior_generator.grid_priors(
        sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
    all_boxes, all_scores, all_labels, all_valid = [], [], [], []
    for cls_score, bbox_pred, prior in zip(cls_scores, bbox_preds, priors):
        scores = channels_last_rows(cls_score).reshape(n, -1).sigmoid()
        deltas = channels_last_rows(bbox_pred).reshape(n, -1, 4)
        if nms_pre > 0:
            scores, idx = top_k_padded(scores, score_thr, nms_pre)
        else:
            idx = torch.arange(scores.shape[1], device=scores.device)
            idx = idx.unsqueeze(0).expand(n, -1)
        prior_idx = torch.div(idx, num_classes, rounding_mode='floor')
        labels = idx - prior_idx * num_classes
        deltas = deltas.gather(1, prior_idx.unsqueeze(-1).expand(-1, -1, 4))
        anchors = prior[prior_idx]
        boxes = head.bbox_coder.decode(
            anchors.reshape(-1, 4), deltas.reshape(-1, 4), max_shape=None)
        boxes = clip_boxes(boxes.reshape(n, -1, 4), height, width)
        valid = scores > score_thr  # padding scores -1
        if min_size is not None and min_size >= 0:
            valid = valid & (boxes[..., 2] - boxes[..., 0] > min_size) & (
                boxes[..., 3] - boxes[..., 1] > min_size)
        all_boxes.append(boxes)
        all_scores.append(scores)
        all_labels.append(labels)
        all_valid.append(valid)
    return (torch.cat(all_boxes, 1), torch.cat(all_scores, 1),
            torch.cat(all_labels, 1), torch.cat(all_valid, 1))


class DenseDetectorExport(nn.Module):
    """Pixel images (N, 3, H, W) -> ``dets`` (N, K, 5), ``labels``
    (N, K) of an mmdet single-stage detector (see the module docs)."""

    output_names = ('dets', 'labels')

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_dense_head(detector)
        self.detector = detector
        self.normalize = Normalize(
            preprocess_params(detector.data_preprocessor))
        self.cfg = detector.bbox_head.test_cfg

    def forward(self, images: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        height, width = input_size(images)
        feats = self.detector.extract_feat(self.normalize(images))
        cls_scores, bbox_preds = self.detector.bbox_head(feats)
        boxes, scores, labels, valid = dense_candidates(
            self.detector.bbox_head, cls_scores, bbox_preds, height, width,
            self.cfg)
        return multiclass_nms(boxes, scores, labels, valid,
                              float(self.cfg.nms.iou_threshold),
                              int(self.cfg.max_per_img))
