# Primitive: Mask R-CNN with a Twins-SVT backbone (Twins Tables 4 and 8).
# mmdet's Mask R-CNN-R50-FPN with the backbone swapped (FPN with 256 channels
# and 5 outputs, as in the official config).
# Table-row configs change only `arch`, the checkpoint and the FPN's
# in_channels.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmtwins.TwinsSVT',
        arch='small',
        # The official detection backbones hard-code drop path 0.2.
        drop_path_rate=0.2,
        # The official detection code zero-pads LSA windows without a mask;
        # the published COCO numbers were produced that way.
        lsa_pad='zero',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_svt_small-42e5f78c.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
