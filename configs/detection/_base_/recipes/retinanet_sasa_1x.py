# Primitive: COCO data, 1x schedule and runtime of the SASA RetinaNet rows:
# mmdet's RetinaNet 1x recipe (SGD lr 0.01, momentum 0.9, weight decay 1e-4,
# 12 epochs, steps at 8 and 11, 500-iter warm-up, single-scale (1333, 800)
# training, 8 GPUs x 2 images).
# Deviation from the paper (SASA §4.2: batch 64, 150 epochs, lr 0.12 with
# cosine decay, multi-scale jitter, crops of at most 640): these rows use the
# 1x COCO schedule.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))

# The learning rate above is for 8 GPUs x 2 images; other totals scale it
# linearly.
auto_scale_lr = dict(enable=True, base_batch_size=16)
