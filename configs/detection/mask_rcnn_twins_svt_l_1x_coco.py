# Twins-SVT-L Mask R-CNN, 1x, PVT setting (Twins Table 8).
_base_ = [
    './_base_/models/mask_rcnn_twins_svt.py',
    './_base_/recipes/mask_rcnn_1x_pvt_setting.py',
]

model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_large-90f6aaa9.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
