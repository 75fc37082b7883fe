# Twins-SVT-B RetinaNet, 1x, PVT setting (Twins Table 3).
_base_ = [
    './_base_/models/retinanet_twins_svt.py',
    './_base_/recipes/retinanet_1x_pvt_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_base-c2265010.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
