"""Tiny models of the quickstart configs for the deployment tests: the
quickstart RetinaNet and Semantic FPN with a four-stage Twins-PCPVT of a
few dozen channels and narrow necks and heads, so that an end-to-end
export takes seconds."""
import os.path as osp

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CFG = osp.join(REPO, 'configs', 'quickstart',
                   'retinanet_twins_pcpvt_s_mini_coco.py')
SEG_CFG = osp.join(REPO, 'configs', 'quickstart',
                   'fpn_twins_pcpvt_s_mini_ade.py')
TINY_ARCH = dict(embed_dims=[16, 32, 32, 64], depths=[1, 1, 1, 1],
                 num_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2],
                 sr_ratios=[8, 4, 2, 1])
CHANNELS = [16, 32, 32, 64]

# Config text that shrinks the quickstart models (appended to a config
# inheriting them). score_thr 0.3 with cls biases at 0 (see perturb) keeps
# a different number of boxes per image.
DET_TINY = f"""
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
    neck=dict(in_channels={CHANNELS!r}, out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.3, nms_pre=200, max_per_img=50))
"""
SEG_TINY = f"""
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
    neck=dict(in_channels={CHANNELS!r}, out_channels=32),
    decode_head=dict(in_channels=[32, 32, 32, 32], channels=32))
"""


def tiny_config(task: str, path: str, extra: str = '') -> str:
    """Write a config inheriting the quickstart config of ``task``."""
    base = DET_CFG if task == 'detection' else SEG_CFG
    with open(path, 'w') as f:
        f.write(f'_base_ = {base!r}\n'
                + (DET_TINY if task == 'detection' else SEG_TINY) + extra)
    return path


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-trivial weights: every parameter moved by noise, and
    RetinaNet's classification biases at 0 (scores near 0.5, not the
    initial 0.01) so that the post-processing has boxes to work on."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        head = getattr(model, 'bbox_head', None)
        if head is not None and hasattr(head, 'retina_cls'):
            head.retina_cls.bias.zero_()
    return model.eval()


def build(cfg_path: str, seed: int = 0) -> torch.nn.Module:
    """The config's model, eval mode, perturbed weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mmtwins  # noqa: F401
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
    return perturb(model, seed)

MASK_RCNN_CFG = osp.join(REPO, 'configs', 'detection',
                         'mask_rcnn_twins_pcpvt_s_1x_coco.py')
MASK_RCNN_TINY = f"""
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), init_cfg=None),
    neck=dict(in_channels={CHANNELS!r}, out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=3),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32,
                       num_classes=3)),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100),
                  rcnn=dict(max_per_img=30)))
"""


def tiny_mask_rcnn_config(path: str) -> str:
    """A tiny Mask R-CNN of the Twins-PCPVT-S paper config (3 classes)."""
    with open(path, 'w') as f:
        f.write(f'_base_ = {MASK_RCNN_CFG!r}\n' + MASK_RCNN_TINY)
    return path
