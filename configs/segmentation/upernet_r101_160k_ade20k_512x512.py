# ResNet-101 UperNet, 160k (Twins Table 2 baseline row).
# Thin config: the upstream mmseg config, plus the mmtwins hooks below.
_base_ = 'mmseg::upernet/upernet_r101_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
