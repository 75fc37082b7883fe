"""Mask R-CNN (mmdet ``TwoStageDetector`` with ``RPNHead`` and
``StandardRoIHead``) as one module from pixel images to detections and
masks.

In the graph, for every image of the batch at once, as mmdet's test mode
does it:

* RPN: per-level ``nms_pre`` best anchors, decoding clipped to the input,
  the ``min_bbox_size`` filter, NMS per level and the ``max_per_img`` best
  proposals (padded, with a validity mask);
* RoIAlign of every proposal on the FPN level mmdet's
  ``SingleRoIExtractor`` maps it to (ONNX ``RoiAlign`` per level on the
  proposals of that level, selected with ``NonZero``);
* the box head: softmax scores, per-class decoding clipped to the input,
  ``score_thr``, per-class NMS and the final ``max_per_img`` rows;
* the mask head on the final boxes that were found (not on the padded
  rows): the predicted class's mask, sigmoid.

Outputs: ``dets`` (N, K, 5) and ``labels`` (N, K) as for one-stage
detectors, and ``masks`` (N, K, h, w): each detection's **RoI mask**
probabilities (h = w = the mask head's output size, 28 for Mask R-CNN)
over its box. Pasting into the image and thresholding
(``mask_thr_binary``) happen in the runner with mmdet's own paste, as for
PyTorch models (:mod:`mmtwins.deploy.masks`).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .detector import (
    UnsupportedModel,
    clip_boxes,
    input_size,
    top_k_padded,
)
from .nms import multiclass_nms
from .preprocess import Normalize, preprocess_params
from .roi_align import roi_align


def _check(model: nn.Module) -> None:
    rpn, roi = model.rpn_head, model.roi_head
    problems = []
    if type(rpn).__name__ != 'RPNHead':
        problems.append(f'rpn head {type(rpn).__name__} (RPNHead needed)')
    if type(roi).__name__ != 'StandardRoIHead':
        problems.append(f'roi head {type(roi).__name__} (StandardRoIHead '
                        'needed)')
    else:
        for name in ('bbox_roi_extractor', 'mask_roi_extractor'):
            ext = getattr(roi, name, None)
            if ext is not None and type(ext).__name__ != \
                    'SingleRoIExtractor':
                problems.append(f'{name} {type(ext).__name__}')
        if getattr(roi.bbox_head, 'reg_class_agnostic', False):
            problems.append('class-agnostic box regression')
        if roi.bbox_head.custom_cls_channels:
            problems.append('custom classification channels')
    if problems:
        raise UnsupportedModel(
            f'{type(model).__name__} has no end-to-end export: '
            + ', '.join(problems))


def map_levels(rois: torch.Tensor, finest_scale: int,
               num_levels: int) -> torch.Tensor:
    """mmdet ``SingleRoIExtractor.map_roi_levels``."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def extract_rois(extractor: nn.Module, feats: Tuple[torch.Tensor, ...],
                 rois: torch.Tensor) -> torch.Tensor:
    """RoI features as mmdet's ``SingleRoIExtractor`` gives them.

    Each level pools only the RoIs mapped to it (``nonzero``: a
    data-dependent count, ONNX ``NonZero``) and writes them into their
    rows, so RoIAlign does the work of one level per RoI, as in mmdet.
    """
    num_levels = len(extractor.featmap_strides)
    levels = map_levels(rois, extractor.finest_scale, num_levels)
    size = list(extractor.roi_layers[0].output_size)
    out = feats[0].new_zeros(rois.shape[0], feats[0].shape[1], *size)
    for i, layer in enumerate(extractor.roi_layers[:num_levels]):
        rows = torch.nonzero(levels == i).squeeze(1)
        pooled = roi_align(feats[i], rois[rows], list(layer.output_size),
                           float(layer.spatial_scale),
                           int(layer.sampling_ratio), bool(layer.aligned))
        out = out.index_copy(0, rows, pooled)
    return out


def batch_rois(boxes: torch.Tensor) -> torch.Tensor:
    """(N, P, 4) boxes -> (N * P, 5) rois with the image index first."""
    n, p = boxes.shape[:2]
    index = torch.arange(n, device=boxes.device, dtype=boxes.dtype)
    index = index.view(n, 1, 1).expand(n, p, 1)
    return torch.cat([index, boxes], dim=-1).reshape(-1, 5)


class TwoStageExport(nn.Module):
    """Pixel images -> ``dets``, ``labels``, ``masks`` (module docs)."""

    output_names = ('dets', 'labels', 'masks')
    mask_layout = 'roi'

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        _check(detector)
        if not detector.roi_head.with_mask:
            self.output_names = ('dets', 'labels')
        self.detector = detector
        self.normalize = Normalize(
            preprocess_params(detector.data_preprocessor))

    def proposals(self, feats, height, width
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, P, 4) RPN proposals and their validity (N, P)."""
        head = self.detector.rpn_head
        cfg = head.test_cfg
        cls_scores, bbox_preds = head(feats)
        n = cls_scores[0].shape[0]
        priors = head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=cls_scores[0].dtype,
            device=cls_scores[0].device)
        nms_pre = int(cfg.get('nms_pre', -1))
        boxes, scores, levels = [], [], []
        for level, (cls, reg, prior) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            score = cls.permute(0, 2, 3, 1).reshape(n, -1)
            score = score.sigmoid() if head.use_sigmoid_cls else \
                cls.permute(0, 2, 3, 1).reshape(n, -1, 2).softmax(-1)[..., 0]
            delta = reg.permute(0, 2, 3, 1).reshape(n, -1, 4)
            if nms_pre > 0:
                # RPN scores are in (0, 1): all valid, padding is -1
                score, idx = top_k_padded(score, -0.5, nms_pre)
            else:
                idx = torch.arange(score.shape[1], device=score.device)
                idx = idx.unsqueeze(0).expand(n, -1)
            delta = delta.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
            box = head.bbox_coder.decode(prior[idx].reshape(-1, 4),
                                         delta.reshape(-1, 4),
                                         max_shape=None)
            boxes.append(clip_boxes(box.reshape(n, -1, 4), height, width))
            scores.append(score)
            levels.append(torch.full_like(idx, level))
        boxes, scores = torch.cat(boxes, 1), torch.cat(scores, 1)
        levels = torch.cat(levels, 1)
        valid = scores > -0.5
        if cfg.get('min_bbox_size', -1) >= 0:
            size = cfg.min_bbox_size
            valid = valid & (boxes[..., 2] - boxes[..., 0] > size) & (
                boxes[..., 3] - boxes[..., 1] > size)
        dets, kept = multiclass_nms(boxes, scores, levels, valid,
                                    float(cfg.nms.iou_threshold),
                                    int(cfg.max_per_img))
        return dets[..., :4], kept >= 0

    def boxes(self, feats, proposals, valid, height, width
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Final ``dets`` and ``labels`` of the box head."""
        roi_head = self.detector.roi_head
        head, cfg = roi_head.bbox_head, roi_head.test_cfg
        n, p = proposals.shape[:2]
        rois = batch_rois(proposals)
        feats_in = feats[:roi_head.bbox_roi_extractor.num_inputs]
        cls_score, bbox_pred = head(
            extract_rois(roi_head.bbox_roi_extractor, feats_in, rois))
        num_classes = head.num_classes
        scores = cls_score.softmax(-1)[:, :num_classes].reshape(n, -1)
        anchors = proposals.unsqueeze(2).expand(n, p, num_classes, 4)
        boxes = head.bbox_coder.decode(anchors.reshape(-1, 4),
                                       bbox_pred.reshape(-1, 4),
                                       max_shape=None)
        boxes = clip_boxes(boxes.reshape(n, -1, 4), height, width)
        labels = torch.arange(num_classes, device=boxes.device)
        labels = labels.view(1, 1, -1).expand(n, p, -1).reshape(n, -1)
        ok = (scores > float(cfg.score_thr)) & valid.unsqueeze(-1).expand(
            n, p, num_classes).reshape(n, -1)
        return multiclass_nms(boxes, scores, labels, ok,
                              float(cfg.nms.iou_threshold),
                              int(cfg.max_per_img))

    def masks(self, feats, dets, labels) -> torch.Tensor:
        """(N, K, h, w) sigmoid mask of each detection's class; the mask
        head runs on the found detections only (padded rows stay 0)."""
        roi_head = self.detector.roi_head
        n, k = labels.shape
        found = torch.nonzero(labels.reshape(-1) >= 0).squeeze(1)
        rois = batch_rois(dets[..., :4])[found]
        feats_in = feats[:roi_head.mask_roi_extractor.num_inputs]
        preds = roi_head.mask_head(
            extract_rois(roi_head.mask_roi_extractor, feats_in, rois))
        channel = labels.reshape(-1)[found]
        if roi_head.mask_head.class_agnostic:
            channel = torch.zeros_like(channel)
        index = channel.reshape(-1, 1, 1, 1).expand(
            -1, 1, *preds.shape[2:])
        masks = preds.gather(1, index).sigmoid().squeeze(1)
        out = masks.new_zeros(n * k, *preds.shape[2:])
        return out.index_copy(0, found, masks).reshape(
            n, k, *preds.shape[2:])

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        height, width = input_size(images)
        feats = self.detector.extract_feat(self.normalize(images))
        proposals, valid = self.proposals(feats, height, width)
        dets, labels = self.boxes(feats, proposals, valid, height, width)
        if not self.detector.roi_head.with_mask:
            return dets, labels
        return dets, labels, self.masks(feats, dets, labels)
