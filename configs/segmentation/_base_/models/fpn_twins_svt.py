# Primitive: Semantic FPN with a Twins-SVT backbone for ADE20K 512x512
# (Twins Table 2, left block). mmseg's FPN-R50 model with the backbone
# swapped: FPN neck 256 channels, 4 outputs; FPNHead 128 channels, dropout
# 0.1, SyncBN; 150 classes. Table-row configs change only `arch`, the
# checkpoint and the neck's in_channels (plus SVT-L's drop path).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmtwins.TwinsSVT',
        arch='small',
        # The official segmentation backbones hard-code drop path 0.2 (0.3
        # for SVT-L); the paper says 0.4 for large models.
        drop_path_rate=0.2,
        # The official segmentation code pads LSA windows with its
        # (one-sided-pad) mask quirk; the published numbers were produced so.
        lsa_pad='mmseg',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_small-42e5f78c.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))
