# Twins-PCPVT-S RetinaNet, 3x, multi-scale (Twins Table 3).
_base_ = [
    './_base_/models/retinanet_twins_pcpvt.py',
    './_base_/recipes/retinanet_3x_ms.py',
]

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_small-e70e7e7a.pth')))
