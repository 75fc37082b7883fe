# PVT-Large RetinaNet, 1x (Twins Table 8 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::pvt/retinanet_pvt-l_fpn_1x_coco.py'
