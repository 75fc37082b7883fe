# SASA ResNet-50 RetinaNet, "Conv-stem + Attention" backbone with convolutional FPN
# and heads, 1x (SASA Table 2). No public weights: trains from scratch.
_base_ = [
    './_base_/models/retinanet_sasa_r50.py',
    './_base_/recipes/retinanet_sasa_1x.py',
]

model = dict(backbone=dict(stem='conv'))
