# Swin-T Mask R-CNN, 3x multi-scale + crop (Twins Table 4 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
