# ResNet-50 RetinaNet, 1x (Twins Table 3 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
