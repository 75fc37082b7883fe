"""mmseg encoder-decoder segmentors as one module from pixel images to a
class map.

:class:`SegmentorExport` normalises, runs backbone, neck and decode head,
resizes the logits to the input size (bilinear, the head's
``align_corners``, as mmseg's ``predict_by_feat`` does) and takes the
argmax: ``seg`` (N, H, W) int64. Resizing a map to the original image size
happens outside the graph.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .detector import UnsupportedModel
from .preprocess import Normalize, preprocess_params


@contextmanager
def symbolic_upsample() -> Iterator[None]:
    """While exporting: mmseg's ``Upsample`` modules compute their output
    size without ``int()``, which would fix the traced size to the
    example's (the same values for every integer ``scale_factor``)."""
    from mmseg.models.utils.wrappers import Upsample, resize
    original = Upsample.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.scale_factor
        if self.size or not float(factor).is_integer():
            return original(self, x)
        size = [t * int(factor) for t in x.shape[-2:]]
        return resize(x, size, None, self.mode, self.align_corners)

    Upsample.forward = forward
    try:
        yield
    finally:
        Upsample.forward = original


def check_segmentor(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModel` unless ``model`` is a whole-image
    multi-class encoder-decoder."""
    head = getattr(model, 'decode_head', None)
    if head is None or not hasattr(model, 'extract_feat'):
        raise UnsupportedModel(f'{type(model).__name__} has no decode head '
                               'to export')
    if isinstance(head, nn.ModuleList):
        raise UnsupportedModel(
            f'{type(model).__name__} cascades decode heads; the end-to-end '
            'export supports one decode head')
    mode = (getattr(model, 'test_cfg', None) or {}).get('mode', 'whole')
    if mode != 'whole':
        raise UnsupportedModel(
            f'test_cfg.mode={mode!r}: the end-to-end export runs whole '
            'images; set model.test_cfg.mode=\'whole\'')
    if getattr(head, 'out_channels', 2) == 1:
        raise UnsupportedModel('binary (out_channels=1) decode heads have '
                               'no end-to-end export')


class SegmentorExport(nn.Module):
    """Pixel images (N, 3, H, W) -> ``seg`` (N, H, W) int64."""

    output_names = ('seg', )

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        check_segmentor(segmentor)
        self.segmentor = segmentor
        self.normalize = Normalize(
            preprocess_params(segmentor.data_preprocessor))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.segmentor.extract_feat(self.normalize(images))
        logits = self.segmentor.decode_head(feats)
        logits = F.interpolate(
            logits, size=images.shape[2:], mode='bilinear',
            align_corners=self.segmentor.decode_head.align_corners)
        return logits.argmax(dim=1)
