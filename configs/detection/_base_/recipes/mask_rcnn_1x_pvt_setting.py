# Primitive: COCO instance data, 1x schedule and runtime of the Twins
# Mask R-CNN 1x rows ("PVT setting", official
# mask_rcnn_*_fpn_1x_coco_pvt_setting.py): AdamW lr 2e-4, weight decay 1e-4,
# 12 epochs, steps at 8 and 11, 500-iter linear warm-up, single-scale
# (1333, 800) training, 8 GPUs x 2 images.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))

# The learning rate above is for 8 GPUs x 2 images; other totals scale it
# linearly.
auto_scale_lr = dict(enable=True, base_batch_size=16)
