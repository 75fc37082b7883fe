# Swin-T RetinaNet, 1x (Twins Table 3 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py'
