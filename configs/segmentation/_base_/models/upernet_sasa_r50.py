# Primitive: UperNet with a stand-alone self-attention ResNet-50 backbone for
# ADE20K 512x512. mmseg's UperNet-R50 model (UPerHead 512 channels, pool
# scales (1, 2, 3, 6); auxiliary FCNHead on stage 3, 256 channels, loss
# weight 0.4; SyncBN; 150 classes) with the backbone swapped as in
# fpn_sasa_r50.py (7x7-window, 8-head attention in every bottleneck; the
# stage widths stay ResNet's). Table-row configs change only the stem.
# Trains from scratch (SASA has no public weights), see fpn_sasa_r50.py.
_base_ = 'mmseg::_base_/models/upernet_r50.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmtwins.SASAResNet',
        depth=50,
        stem='conv',
        attention_stages=(True, True, True, True),
        kernel_size=7,
        num_heads=8,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
