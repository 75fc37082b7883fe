# Primitive: Mask R-CNN with a Twins-PCPVT backbone (Twins Tables 4 and 8).
# mmdet's Mask R-CNN-R50-FPN with the backbone swapped; the FPN keeps mmdet's
# (and the official Twins config's) 256 channels and 5 outputs. Table-row
# configs change only `arch` and the checkpoint (all PCPVT sizes have the
# channels [64, 128, 320, 512]).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmtwins.TwinsPCPVT',
        arch='small',
        # The official detection backbones hard-code drop path 0.2 for every
        # size (as the paper says).
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vt3p-weights/twins_pcpvt_small-e70e7e7a.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
