# Primitive: UperNet with a Twins-SVT backbone for ADE20K 512x512 (Twins
# Table 2, right block). mmseg's UperNet-R50 model with the backbone swapped:
# UPerHead 512 channels, pool scales (1, 2, 3, 6); auxiliary FCNHead on
# stage 3 (256 channels, loss weight 0.4); SyncBN; 150 classes. Table-row
# configs change only `arch`, the checkpoint and the heads' in_channels
# (plus SVT-L's drop path).
_base_ = 'mmseg::_base_/models/upernet_r50.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmtwins.TwinsSVT',
        arch='small',
        # Effective drop path of the official code: 0.2 (0.3 for SVT-L).
        drop_path_rate=0.2,
        # The official segmentation code pads LSA windows with its
        # (one-sided-pad) mask quirk; the published numbers were produced so.
        lsa_pad='mmseg',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_small-42e5f78c.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
