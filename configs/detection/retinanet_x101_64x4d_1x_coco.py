# ResNeXt-101-64x4d RetinaNet, 1x (Twins Table 8 baseline row).
# Thin config: the upstream mmdet config, plus the mmtwins hooks below.
_base_ = 'mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
