# Twins-SVT-L UperNet, 160k, Swin setting (Twins Table 2).
_base_ = [
    './_base_/models/upernet_twins_svt.py',
    './_base_/recipes/upernet_160k_ade20k_swin_setting.py',
]

model = dict(
    backbone=dict(
        arch='large',
        # The official segmentation code hard-codes drop path 0.3 for SVT-L.
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_large-90f6aaa9.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
