# Twins-PCPVT-B Mask R-CNN, 3x, multi-scale, Swin setting (Twins Table 4).
_base_ = [
    './_base_/models/mask_rcnn_twins_pcpvt.py',
    './_base_/recipes/mask_rcnn_3x_ms_swin_setting.py',
]

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_base-e5ecb09b.pth')))
