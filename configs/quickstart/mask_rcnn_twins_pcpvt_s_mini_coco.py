# Quickstart: the Twins-PCPVT-S Mask R-CNN paper config
# (../detection/mask_rcnn_twins_pcpvt_s_1x_coco.py) on the built-in mini
# COCO-style set with its polygon masks
# (tools/dataset_converters/make_mini_datasets.py data/mini), trained from
# scratch (no ImageNet weights are downloaded). `bash tools/quickstart.sh
# mask-rcnn` runs it.
#
# The layers are the paper's (backbone, 256-channel FPN, RPN, 2-fc box head,
# 4-conv mask head); what changes is sized for 2 CPU cores:
# * data paths, the 3 classes, and 96 x 96 images (the mini images are
#   128 x 128);
# * fewer region proposals (100 instead of 1000 per image) and sampled RoIs
#   (16 instead of 512 per image, a quarter of them positive): the images
#   hold 1-3 large shapes, and the box and mask heads' cost grows with the
#   number of RoIs. The mask head runs on the positive RoIs only; its
#   training step costs 3.1 CPU-seconds for 64 of them (8 per image), 0.7
#   for 16 (measured on 2 threads);
# * AdamW at a higher learning rate than the paper's 2e-4 (which assumes
#   ImageNet-pretrained weights), warm-up, cosine decay, gradient clipping.
_base_ = '../detection/mask_rcnn_twins_pcpvt_s_1x_coco.py'

# Data paths and classes.
data_root = 'data/mini/coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 160, 60), (40, 80, 220)])

img_scale = (96, 96)

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=3),
        mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=16))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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

# Schedule: 4 epochs of 50 iterations (8 images each), linear warm-up then
# cosine decay; validation after epochs 2 and 4. Measured with
# `bash tools/quickstart.sh mask-rcnn` on the 2-core machine: bbox mAP 0.384
# / segm mAP 0.520 after epoch 2, 0.671 / 0.773 after epoch 4, in 6 min 5 s
# of training (1.8 s/iter, load average about 2) and in 10 min 39 s while
# the machine was busier (3.3 s/iter, load average 3-7).
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
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
