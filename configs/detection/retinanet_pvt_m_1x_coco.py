# PVT-Medium RetinaNet, 1x (Twins Table 3 baseline row).
# Thin config: the upstream mmdet config, unchanged.
_base_ = 'mmdet::pvt/retinanet_pvt-m_fpn_1x_coco.py'
