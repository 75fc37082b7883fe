# Primitive: RetinaNet with a stand-alone self-attention ResNet-50 backbone
# and mmdet's convolutional FPN and heads (SASA Table 2, "Convolution" rows).
# Every 3x3 conv of the bottlenecks is a 7x7-window, 8-head local attention
# layer (SASA §4.1). Table-row configs change only the stem.
#
# SASA has no public ImageNet weights, so the backbone trains from scratch
# (init_cfg=None): no frozen stages, and BatchNorm keeps learning (SyncBN,
# norm_eval=False). To start from your own ImageNet checkpoint, pass e.g.
# --cfg-options model.backbone.init_cfg.type=Pretrained
#   model.backbone.init_cfg.checkpoint=/path/to/sasa_r50.pth
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
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
        init_cfg=None))
