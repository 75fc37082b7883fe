# Quickstart: the Twins-PCPVT-S RetinaNet paper config
# (../detection/retinanet_twins_pcpvt_s_1x_coco.py) on the built-in mini
# COCO-style set (tools/dataset_converters/make_mini_datasets.py data/mini).
# Only the data paths, classes, image scale and schedule change; the model is
# the paper's, trained from scratch (no ImageNet weights are downloaded).
# Sized to learn on 2 CPU cores in minutes, see tools/quickstart.sh.
_base_ = '../detection/retinanet_twins_pcpvt_s_1x_coco.py'

# Data paths and classes.
data_root = 'data/mini/coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 160, 60), (40, 80, 220)])

# Image scale: the 128 x 128 mini images are trained and tested at 96 x 96,
# which keeps a RetinaNet training step on 2 CPU cores near one second.
img_scale = (96, 96)

model = dict(
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Schedule: 5 epochs (250 iterations of 8 images) at a higher learning rate
# than the paper's 1e-4 (which assumes ImageNet-pretrained weights), with
# warm-up, cosine decay and gradient clipping; validation after epochs 3, 5.
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01,
         by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True),
]
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(type='mmtwins.SafeCheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))
randomness = dict(seed=0)
