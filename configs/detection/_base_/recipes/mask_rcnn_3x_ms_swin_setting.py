# Primitive: COCO instance data with multi-scale + crop training on the shared
# 3x schedule, in mixed precision: the recipe of the Twins Mask R-CNN 3x rows
# ("Swin setting", official mask_rcnn_*_fpn_3x_coco_swin_setting.py).
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    './schedule_3x_ms.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.ms_crop_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# The official configs train these rows in fp16 with a static loss scale of
# 512; mmengine's AmpOptimWrapper needs a GPU.
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.)
