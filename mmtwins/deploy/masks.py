"""Masks of an end-to-end Mask R-CNN file, pasted into the original image
with mmdet's own paste (``_do_paste_mask``) and thresholded at
``mask_thr_binary``, as ``FCNMaskHead.predict_by_feat`` does."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

MASK_THRESHOLD = 0.5


def masks_for_image(masks: np.ndarray, dets: np.ndarray, layout: str,
                    size: Tuple[int, int], metainfo: dict,
                    threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """(n, H, W) bool masks at ``ori_shape`` from (n, h, w) RoI mask
    probabilities and their (n, 5) detections in input pixels."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    if layout != 'roi':
        raise ValueError(f'unknown mask layout {layout!r}')
    ori = metainfo.get('ori_shape', size)[:2]
    boxes = torch.from_numpy(np.ascontiguousarray(dets[:, :4]))
    scale = metainfo.get('scale_factor')
    if scale is not None:
        boxes = boxes / boxes.new_tensor(scale).repeat(2)
    probs = torch.from_numpy(np.ascontiguousarray(masks))
    if len(probs) == 0:
        return torch.zeros(0, *ori, dtype=torch.bool)
    pasted, _ = _do_paste_mask(probs[:, None], boxes, int(ori[0]),
                               int(ori[1]), skip_empty=False)
    return pasted >= threshold
