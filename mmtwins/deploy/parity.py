"""Compare an end-to-end ONNX file with the PyTorch model's own
``predict`` (mmdet / mmseg post-processing, no rescaling) on the same
pixel batch.

Detection: per image the ONNX detections must be the PyTorch ones, each
PyTorch box matched to an ONNX box of the same label at IoU >= 0.99.
Segmentation: the share of pixels with the same class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch
from torch import nn

from .preprocess import Normalize, preprocess_params

MATCH_IOU = 0.99


@dataclass
class Agreement:
    """How far ONNX and PyTorch agree on one batch."""
    reference: int  # PyTorch detections (pixels for segmentation)
    matched: int  # of those, found in the ONNX output
    extra: int  # ONNX detections left unmatched
    lowest_iou: float  # lowest IoU of a matched pair (1.0 if none)

    @property
    def exact(self) -> bool:
        return self.matched == self.reference and self.extra == 0


def reference_predict(model: nn.Module, images: torch.Tensor) -> list:
    """``model.predict`` (eval, no rescale) of a pixel batch that needs no
    padding, through the model's own post-processing."""
    task = 'segmentation' if hasattr(model, 'decode_head') and not hasattr(
        model, 'bbox_head') else 'detection'
    h, w = images.shape[2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                batch_input_shape=(h, w), scale_factor=(1., 1.))
    if task == 'detection':
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    samples = [Sample(metainfo=dict(meta)) for _ in range(len(images))]
    inputs = Normalize(preprocess_params(model.data_preprocessor))(images)
    with torch.no_grad():
        if task == 'segmentation':  # the class map at ori_shape = input
            return model.predict(inputs, samples)
        return model.predict(inputs, samples, rescale=False)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (n, 4) and (m, 4) x1, y1, x2, y2 boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return inter / np.maximum(union, 1e-9)


def match_detections(ref_boxes: np.ndarray, ref_labels: np.ndarray,
                     boxes: np.ndarray, labels: np.ndarray) -> Agreement:
    """Match each reference detection to an unused one of the same label
    with the highest IoU (>= :data:`MATCH_IOU`)."""
    ref_boxes = np.asarray(ref_boxes).reshape(-1, 4)
    boxes = np.asarray(boxes).reshape(-1, 4)
    used = np.zeros(len(boxes), dtype=bool)
    iou = box_iou(ref_boxes, boxes) if len(boxes) and len(ref_boxes) \
        else np.zeros((len(ref_boxes), len(boxes)))
    matched, lowest = 0, 1.0
    for j in range(len(ref_boxes)):
        cand = np.where((labels == ref_labels[j]) & ~used)[0]
        if not len(cand):
            continue
        best = cand[np.argmax(iou[j, cand])]
        if iou[j, best] >= MATCH_IOU:
            used[best] = True
            matched += 1
            lowest = min(lowest, float(iou[j, best]))
    return Agreement(len(ref_boxes), matched, int((~used).sum()), lowest)


def compare_detections(samples: list, outs: Dict[str, np.ndarray]
                       ) -> Agreement:
    """:func:`match_detections` of PyTorch's and the file's detections,
    summed over the batch."""
    total = Agreement(0, 0, 0, 1.0)
    for i, sample in enumerate(samples):
        pred = sample.pred_instances
        keep = outs['labels'][i] >= 0
        one = match_detections(pred.bboxes.detach().cpu().numpy(),
                               pred.labels.cpu().numpy(),
                               outs['dets'][i][keep][:, :4],
                               outs['labels'][i][keep])
        total = Agreement(total.reference + one.reference,
                          total.matched + one.matched,
                          total.extra + one.extra,
                          min(total.lowest_iou, one.lowest_iou))
    return total


def compare_segmentation(samples: list, outs: Dict[str, np.ndarray]
                         ) -> Agreement:
    """Pixels with the same class in PyTorch's and the file's maps."""
    ref = np.stack([s.pred_sem_seg.data[0].cpu().numpy() for s in samples])
    same = int((ref == outs['seg']).sum())
    return Agreement(int(ref.size), same, int(ref.size) - same, 1.0)


def check_file(model: nn.Module, run, images: torch.Tensor) -> Agreement:
    """PyTorch ``predict`` against ``run`` (pixel batch -> named ONNX
    outputs) on ``images``."""
    samples = reference_predict(model, images)
    outs = run(images.numpy().astype(np.float32))
    if 'seg' in outs:
        return compare_segmentation(samples, outs)
    return compare_detections(samples, outs)


def sizes_to_check(size: List[int]) -> List[List[int]]:
    """Two more sizes than the export size: smaller and larger."""
    h, w = size
    return [[max(32, h - 32), w + 64], [h + 64, max(32, w - 32)]]
