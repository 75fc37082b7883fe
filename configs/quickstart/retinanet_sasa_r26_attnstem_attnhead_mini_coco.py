# Quickstart: an all-attention RetinaNet (SASA "full attention": attention
# stem, attention bottlenecks, attention FPN and heads, after
# ../detection/retinanet_sasa_r50_attnstem_attnhead_1x_coco.py) on the
# built-in mini COCO-style set
# (tools/dataset_converters/make_mini_datasets.py data/mini), trained from
# scratch. `bash tools/quickstart.sh sasa` runs it.
#
# Smaller than the paper's model, so that it learns on 2 CPU cores in
# minutes (the layers and their structure are the paper's):
# * backbone: SASA-ResNet-26 (blocks 1, 2, 4, 1) instead of -50, at half
#   width (base_channels=32: stage outputs 128/256/512/1024 channels, a
#   32-channel attention stem);
# * FPN and heads: 128 channels instead of 256, 2 stacked attention layers
#   per head branch instead of 4, 5x5 windows with 4 heads in FPN and heads
#   (the backbone keeps 7x7 windows with 8 heads);
# * three pyramid levels (P3-P5, strides 8-32) instead of five: on 96 x 96
#   inputs P6/P7 would be 2 x 2 and 1 x 1 maps, and every level costs
#   attention calls;
# * GroupNorm after the FPN and head attention layers (mmdet's RetinaNet
#   has none there): without it the same model scored bbox mAP 0.009
#   after 4 epochs, with it 0.29 (same learning rate);
# * plain BatchNorm in the backbone (one process), AdamW with warm-up and
#   cosine decay instead of SGD (faster from scratch on a small set).
_base_ = '../detection/retinanet_sasa_r50_attnstem_attnhead_1x_coco.py'

# Data paths and classes (as the Twins quickstart).
data_root = 'data/mini/coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 160, 60), (40, 80, 220)])

# The 128 x 128 mini images are trained and tested at 96 x 96.
img_scale = (96, 96)
width = 128  # FPN and head channels

model = dict(
    backbone=dict(
        depth=26,
        base_channels=32,
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(
        in_channels=[128, 256, 512, 1024],
        out_channels=width,
        num_outs=3,
        kernel_size=5,
        num_heads=4,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    bbox_head=dict(
        num_classes=3,
        in_channels=width,
        feat_channels=width,
        stacked_convs=2,
        kernel_size=5,
        num_heads=4,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        anchor_generator=dict(strides=[8, 16, 32])))

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

# Schedule: 6 epochs of 50 iterations (8 images each), linear warm-up then
# cosine decay, gradient clipping; validation after every epoch (50 images,
# a few seconds). Measured on the shared, busy 2-core machine (README):
# 5 epochs reached bbox mAP 0.321 in 9.1 min of training, 6 epochs 0.541 in
# 10.4 min, 8 epochs 0.574 in 16.2 min; 6 keeps the mAP well above 0.3.
# At lr 1e-3, epoch 4 of a 10-epoch run scored 0.29 instead of 0.39.
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.01,
         by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True),
]
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
