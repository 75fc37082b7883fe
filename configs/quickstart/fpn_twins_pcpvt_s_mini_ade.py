# Quickstart: the Twins-PCPVT-S Semantic FPN paper config
# (../segmentation/fpn_twins_pcpvt_s_80k_ade20k_512x512.py) on the built-in
# mini ADE20K-style set (tools/dataset_converters/make_mini_datasets.py
# data/mini). Only the data paths, classes, image scale and schedule change;
# the model is the paper's, trained from scratch (no ImageNet weights are
# downloaded). Sized to learn on 2 CPU cores in minutes, see
# tools/quickstart.sh.
_base_ = '../segmentation/fpn_twins_pcpvt_s_80k_ade20k_512x512.py'

# Data paths and classes. The label PNGs follow ADEChallengeData2016 (0 =
# ignore, classes from 1, reduce_zero_label=True); mmseg's generic dataset
# class reads them, because ADE20KDataset only accepts the 150 ADE classes.
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

# Image scale: the mini images are 128 x 128.
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=4))

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
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True)
             for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
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

# Schedule: 150 iterations of 8 crops at a higher learning rate than the
# paper's 1e-4 (which assumes ImageNet-pretrained weights), with warm-up and
# poly decay; validation after iterations 75 and 150.
max_iters = 150
train_cfg = dict(max_iters=max_iters, val_interval=75)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=30, end=max_iters,
         by_epoch=False),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(type='mmtwins.SafeCheckpointHook', interval=max_iters,
                    max_keep_ckpts=1))
randomness = dict(seed=0)
