# Twins-PCPVT-B UperNet, 160k, Swin setting (Twins Table 2).
_base_ = [
    './_base_/models/upernet_twins_pcpvt.py',
    './_base_/recipes/upernet_160k_ade20k_swin_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_base-e5ecb09b.pth')))
