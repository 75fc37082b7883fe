"""The data preprocessor's pixel handling, inside and outside the graph.

An exported model takes pixel images (N, 3, H, W) in the channel order the
test pipeline loads them (BGR for mmcv's ``LoadImageFromFile``).
:class:`Normalize` does what the config's data preprocessor does to them
(channel swap, ``(x - mean) / std``) as part of the graph.

Batching stays outside: :func:`pad_batch` pads every image to the batch's
largest size rounded up to the preprocessor's size divisor, with the mean
pixel, which the graph's normalisation turns into the zeros mmdet and mmseg
pad the normalised batch with.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def preprocess_params(preprocessor: nn.Module) -> Dict[str, Any]:
    """``mean``, ``std`` (per channel, after the swap), ``swap_rb`` and
    ``pad_divisor`` (1: none) of an mmdet / mmseg data preprocessor."""
    swap = bool(getattr(preprocessor, '_channel_conversion',
                        getattr(preprocessor, 'channel_conversion', False)))
    if getattr(preprocessor, '_enable_normalize', False):
        mean = preprocessor.mean.flatten().tolist()
        std = preprocessor.std.flatten().tolist()
    else:
        mean, std = [0., 0., 0.], [1., 1., 1.]
    divisor = getattr(preprocessor, 'pad_size_divisor', None)
    if divisor is None:  # mmseg: size_divisor, only used with test_cfg
        test_cfg = getattr(preprocessor, 'test_cfg', None) or {}
        divisor = test_cfg.get('size_divisor', 1) or 1
    return dict(mean=mean, std=std, swap_rb=swap, pad_divisor=int(divisor))


def pad_pixel(params: Dict[str, Any]) -> List[float]:
    """The pixel (input channel order) that normalises to zero."""
    mean = list(params['mean'])
    return mean[::-1] if params['swap_rb'] else mean


class Normalize(nn.Module):
    """Channel swap and ``(x - mean) / std`` of pixel images."""

    def __init__(self, params: Dict[str, Any]) -> None:
        super().__init__()
        self.swap_rb = bool(params['swap_rb'])
        self.register_buffer(
            'mean', torch.tensor(params['mean']).view(1, -1, 1, 1),
            persistent=False)
        self.register_buffer(
            'std', torch.tensor(params['std']).view(1, -1, 1, 1),
            persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.swap_rb:
            images = images.flip(1)
        return (images.float() - self.mean) / self.std


def pad_batch(images: Sequence[Any], params: Dict[str, Any]
              ) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """Stack (3, h, w) images into one float32 (N, 3, H, W) array padded
    at the bottom and right with :func:`pad_pixel`; also each image's
    (h, w)."""
    arrays = [np.asarray(img.cpu() if hasattr(img, 'cpu') else img,
                         dtype=np.float32) for img in images]
    divisor = max(1, int(params.get('pad_divisor', 1)))
    height = max(a.shape[1] for a in arrays)
    width = max(a.shape[2] for a in arrays)
    height = -(-height // divisor) * divisor
    width = -(-width // divisor) * divisor
    fill = np.asarray(pad_pixel(params), dtype=np.float32)
    batch = np.empty((len(arrays), arrays[0].shape[0], height, width),
                     dtype=np.float32)
    batch[:] = fill.reshape(1, -1, 1, 1)
    for i, a in enumerate(arrays):
        batch[i, :, :a.shape[1], :a.shape[2]] = a
    return batch, [(a.shape[1], a.shape[2]) for a in arrays]
