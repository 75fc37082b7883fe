# Twins-SVT-S Mask R-CNN, 1x, PVT setting (Twins Table 4).
_base_ = [
    './_base_/models/mask_rcnn_twins_svt.py',
    './_base_/recipes/mask_rcnn_1x_pvt_setting.py',
]

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_small-42e5f78c.pth')))
