# Swin-T Mask R-CNN, 3x multi-scale + crop (Twins Table 4 baseline row).
# Thin config: the upstream mmdet config, plus the mmtwins hooks below.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

custom_imports = dict(imports=['mmtwins'], allow_failed_imports=False)
# mmtwins' crash-safe checkpoints and the heads/dataset class-count check.
default_hooks = dict(checkpoint=dict(type='mmtwins.SafeCheckpointHook'))
custom_hooks = [dict(type='mmtwins.NumClassCheckHook')]
