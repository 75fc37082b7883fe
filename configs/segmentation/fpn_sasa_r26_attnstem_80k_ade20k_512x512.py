# SASA-ResNet-26 Semantic FPN, 80k, ADE20K 512x512: "Full Attention": the SASA attention stem,
# attention in every bottleneck (blocks 1, 2, 4, 1; SASA Table 1 backbone).
# Trained with the recipe of the ResNet-50 row beside it
# (fpn_r50_80k_ade20k_512x512.py, the PVT setting: AdamW lr 1e-4, weight
# decay 1e-4, poly decay to 1e-6 over 80k iterations, batch 16). The SASA
# paper has no segmentation result; no public weights: trains from scratch.
_base_ = [
    './_base_/models/fpn_sasa_r50.py',
    './_base_/recipes/fpn_80k_ade20k_pvt_setting.py',
]

model = dict(backbone=dict(depth=26, stem='attention'))
