# ResNet-101 Mask R-CNN, 3x multi-scale (Twins Table 4 baseline row;
# mmdet's 3x recipe: SGD, shorter side 640..800).
# Thin config: the upstream mmdet config, plus the mmtwins hooks below.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r101_fpn_ms-poly-3x_coco.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
