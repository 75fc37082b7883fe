# Twins-SVT-B UperNet, 160k, Swin setting (Twins Table 2).
_base_ = [
    './_base_/models/upernet_twins_svt.py',
    './_base_/recipes/upernet_160k_ade20k_swin_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_base-c2265010.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
