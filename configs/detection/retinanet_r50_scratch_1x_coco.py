# ResNet-50 RetinaNet trained from scratch on the same 1x recipe as the SASA
# rows (SASA Table 2 "Baseline" row): the controlled baseline for
# retinanet_sasa_r50_*_1x_coco.py, which have no ImageNet weights to start
# from. mmdet's RetinaNet-R50 config with the backbone randomly initialised,
# no frozen stages and BatchNorm that keeps learning (SyncBN). The paper's
# baseline starts from ImageNet weights: for that, see retinanet_r50_1x_coco.py.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

model = dict(
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=None))

auto_scale_lr = dict(enable=True, base_batch_size=16)
