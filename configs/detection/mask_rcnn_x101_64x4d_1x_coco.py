# ResNeXt-101-64x4d Mask R-CNN, 1x (Twins Table 8 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_x101-64x4d_fpn_1x_coco.py'
