# Twins-PCPVT-B RetinaNet, 1x, PVT setting (Twins Table 3).
_base_ = [
    './_base_/models/retinanet_twins_pcpvt.py',
    './_base_/recipes/retinanet_1x_pvt_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_base-e5ecb09b.pth')))
