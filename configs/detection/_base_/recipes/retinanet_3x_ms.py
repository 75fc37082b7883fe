# Primitive: COCO box data with multi-scale + crop training on the shared 3x
# schedule: the recipe of the Twins RetinaNet 3x rows (official
# retinanet_*_fpn_3x_ms_coco.py).
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    './schedule_3x_ms.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.ms_crop_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
