# Quickstart: a SASA-ResNet Semantic FPN (after
# ../segmentation/fpn_sasa_r26_convstem_80k_ade20k_512x512.py: conv stem,
# 7x7-window 8-head attention in every bottleneck, mmseg's FPN neck and
# head) on the built-in mini ADE20K-style set
# (tools/dataset_converters/make_mini_datasets.py data/mini), trained from
# scratch. `bash tools/quickstart.sh sasa` runs it after the SASA detector.
#
# Smaller than the table row, so that it learns on 2 CPU cores in minutes
# (the layers and their structure are the row's):
# * SASA-ResNet-26 at half width (base_channels=32: stage outputs
#   128/256/512/1024 channels, a 32-channel conv stem), plain BatchNorm
#   (one process);
# * FPN neck and head 128 / 64 channels instead of 256 / 128;
# * 128 x 128 crops of the 128 x 128 mini images, 4 classes;
# * AdamW at a higher learning rate than the row's 1e-4, with warm-up, poly
#   decay and gradient clipping, for 150 iterations of 8 crops.
_base_ = '../segmentation/fpn_sasa_r26_convstem_80k_ade20k_512x512.py'

# Data paths and classes (as the Twins quickstart segmentor): the label
# PNGs follow ADEChallengeData2016 (0 = ignore, classes from 1).
data_root = 'data/mini/ade/ADEChallengeData2016'
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle'),
    palette=[[120, 120, 120], [220, 20, 60], [0, 160, 60], [40, 80, 220]])
mini_dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)

crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(base_channels=32, norm_cfg=norm_cfg),
    neck=dict(in_channels=[128, 256, 512, 1024], out_channels=128),
    decode_head=dict(in_channels=[128, 128, 128, 128], channels=64,
                     norm_cfg=norm_cfg, num_classes=4))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(1.0, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**mini_dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**mini_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Schedule: 150 iterations of 8 crops, warm-up then poly decay; validation
# after iterations 75 and 150.
max_iters = 150
train_cfg = dict(max_iters=max_iters, val_interval=75)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=30, end=max_iters,
         by_epoch=False),
]
optim_wrapper = dict(
    optimizer=dict(lr=2e-3, weight_decay=0.05),
    clip_grad=dict(_delete_=True, max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(type='mmtwins.SafeCheckpointHook', interval=max_iters,
                    max_keep_ckpts=1))
randomness = dict(seed=0)
