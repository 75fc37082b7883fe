# Primitive: ADE20K data, 160k schedule and runtime of the Twins UperNet rows
# ("Swin setting", official upernet_*_512x512_160k_ade20k_swin_setting.py):
# AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 with no decay on the
# PEG (`pos_block`) and norms; 1500-iter linear warm-up from 1e-6, then
# linear (poly power 1) decay to 0 at 160k; 512x512 crops; 8 GPUs x 2 images.
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    'mmseg::_base_/default_runtime.py',
]

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]

train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False),
]

# The learning rate above is for 8 GPUs x 2 images; other totals scale it
# linearly.
auto_scale_lr = dict(enable=True, base_batch_size=16)
