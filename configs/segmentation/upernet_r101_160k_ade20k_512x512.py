# ResNet-101 UperNet, 160k (Twins Table 2 baseline row).
# Thin config: the upstream mmseg config, unchanged.
_base_ = 'mmseg::upernet/upernet_r101_4xb4-160k_ade20k-512x512.py'
