# ResNet-50 Semantic FPN, 80k, PVT setting (Twins Table 2 baseline row; the
# number comes from the PVT paper). mmseg ships this model for ADE20K only on
# a 160k SGD schedule; this thin config inherits it and switches to the PVT
# setting of the Twins FPN rows (AdamW lr 1e-4, weight decay 1e-4, poly decay
# to 1e-6 over 80k iterations, batch 16).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'

train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(
    checkpoint=dict(type='mmtwins.SafeCheckpointHook', interval=8000))
custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# The heads/dataset class-count check of mmtwins.
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
auto_scale_lr = dict(enable=True, base_batch_size=16)
