# ResNet-101 Mask R-CNN, 1x (Twins Table 4 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py'
