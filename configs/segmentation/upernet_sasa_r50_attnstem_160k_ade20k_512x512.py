# SASA-ResNet-50 UperNet, 160k, ADE20K 512x512: "Full Attention": the SASA attention stem,
# attention in every bottleneck (SASA Table 1 backbone). Trained with the
# recipe of the ResNet rows beside it (upernet_r101_160k_ade20k_512x512.py,
# mmseg's UperNet-ResNet recipe: SGD lr 0.01, momentum 0.9, weight decay
# 5e-4, poly decay to 1e-4 over 160k iterations, batch 16). The SASA paper
# has no segmentation result; no public weights: trains from scratch.
_base_ = [
    './_base_/models/upernet_sasa_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

model = dict(backbone=dict(stem='attention'))

# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
