# Primitive: Semantic FPN with a Twins-PCPVT backbone for ADE20K 512x512
# (Twins Table 2, left block). mmseg's FPN-R50 model with the backbone
# swapped: FPN neck 256 channels, 4 outputs; FPNHead 128 channels, dropout
# 0.1, SyncBN; 150 classes. Table-row configs change only `arch` and the
# checkpoint (all PCPVT sizes have the channels [64, 128, 320, 512]).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmtwins.TwinsPCPVT',
        arch='small',
        # The official segmentation backbones hard-code drop path 0.2 (the
        # paper says 0.4 for large models; no official config uses that).
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_small-e70e7e7a.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
