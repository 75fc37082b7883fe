# Twins-PCPVT-B Semantic FPN, 80k, PVT setting (Twins Table 2).
_base_ = [
    './_base_/models/fpn_twins_pcpvt.py',
    './_base_/recipes/fpn_80k_ade20k_pvt_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_base-e5ecb09b.pth')))
