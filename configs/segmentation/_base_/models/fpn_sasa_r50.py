# Primitive: Semantic FPN with a stand-alone self-attention ResNet-50
# backbone for ADE20K 512x512. mmseg's FPN-R50 model (FPN neck 256 channels,
# 4 outputs; FPNHead 128 channels, dropout 0.1; SyncBN; 150 classes) with
# the backbone swapped: every 3x3 conv of the bottlenecks is a 7x7-window,
# 8-head local attention layer (SASA §4.1). Table-row configs change only
# the depth and the stem; the stage widths (256/512/1024/2048) are
# ResNet's, so the neck is unchanged.
#
# SASA has no public ImageNet weights, so the backbone trains from scratch
# (init_cfg=None, no frozen stages, BatchNorm keeps learning). To start from
# your own ImageNet checkpoint, pass e.g.
# --cfg-options model.backbone.init_cfg.type=Pretrained
#   model.backbone.init_cfg.checkpoint=/path/to/sasa_r50.pth
_base_ = 'mmseg::_base_/models/fpn_r50.py'

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
    decode_head=dict(num_classes=150))
