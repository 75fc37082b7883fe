# Twins-SVT-S UperNet, 160k, Swin setting (Twins Table 2).
_base_ = [
    './_base_/models/upernet_twins_svt.py',
    './_base_/recipes/upernet_160k_ade20k_swin_setting.py',
]

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_small-42e5f78c.pth')))
