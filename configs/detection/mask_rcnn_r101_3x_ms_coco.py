# ResNet-101 Mask R-CNN, 3x multi-scale (Twins Table 4 baseline row;
# mmdet's 3x recipe: SGD, shorter side 640..800).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r101_fpn_ms-poly-3x_coco.py'
