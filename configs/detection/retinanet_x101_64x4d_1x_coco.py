# ResNeXt-101-64x4d RetinaNet, 1x (Twins Table 8 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'
