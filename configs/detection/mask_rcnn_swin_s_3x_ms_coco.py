# Swin-S Mask R-CNN, 3x multi-scale + crop, mixed precision (Twins
# Table 4 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py'
