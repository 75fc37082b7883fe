# Primitive: the 3x schedule shared by the Twins RetinaNet and Mask R-CNN 3x
# rows (official retinanet_*_fpn_3x_ms_coco.py and
# mask_rcnn_*_fpn_3x_coco_swin_setting.py): AdamW lr 1e-4, weight decay 0.05
# with no decay on the PEG (`pos_block`) and norms, 36 epochs, steps at 27
# and 33, 500-iter linear warm-up, 8 GPUs x 2 images. `ms_crop_aug` is the
# DETR-style multi-scale + crop augmentation the two data recipes insert.
_base_ = [
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

# Either resize the shorter side to one of 480..800 (longer side <= 1333), or
# resize to 400/500/600, take a random 384..600 crop, then resize to 480..800.
ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
             (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
             (800, 1333)]
ms_crop_aug = dict(
    type='RandomChoice',
    transforms=[
        [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
        [
            dict(
                type='RandomChoiceResize',
                scales=[(400, 1333), (500, 1333), (600, 1333)],
                keep_ratio=True),
            dict(
                type='RandomCrop',
                crop_type='absolute_range',
                crop_size=(384, 600),
                allow_negative_crop=True),
            dict(
                type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
        ],
    ])

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))

# The learning rate above is for 8 GPUs x 2 images; other totals scale it
# linearly.
auto_scale_lr = dict(enable=True, base_batch_size=16)
