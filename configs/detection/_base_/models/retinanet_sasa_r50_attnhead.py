# Primitive: RetinaNet with a stand-alone self-attention ResNet-50 backbone
# and attention in the FPN and the heads (SASA Table 2, "Attention" rows):
# every 3x3 conv there is a 7x7-window, 8-head attention layer of width 256
# (strided ones are followed by a 2x2 average pool). Table-row configs change
# only the stem. Trains from scratch, see retinanet_sasa_r50.py.
_base_ = './retinanet_sasa_r50.py'

model = dict(
    neck=dict(type='mmtwins.SASAFPN', kernel_size=7, num_heads=8),
    bbox_head=dict(type='mmtwins.SASARetinaHead', kernel_size=7, num_heads=8))
