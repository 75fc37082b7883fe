# Swin-T Mask R-CNN, 1x (Twins Table 4 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
