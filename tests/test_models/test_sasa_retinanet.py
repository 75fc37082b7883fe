"""SASAFPN, SASARetinaHead and an all-attention RetinaNet (SASA Table 2)."""
import math

import pytest
import torch
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

from mmtwins.models.dense_heads import SASARetinaHead
from mmtwins.models.layers import SASAModule, SASAttention
from mmtwins.models.necks import SASAFPN

register_all_modules()


pytestmark = pytest.mark.usefixtures('single_thread')


def _attention_layers(module):
    return [m for m in module.modules() if isinstance(m, SASAttention)]


def test_fpn_replaces_every_3x3_conv():
    neck = SASAFPN([16, 32, 64, 128], 32, 5, start_level=1,
                   add_extra_convs='on_input', kernel_size=3, num_heads=4)
    assert len(neck.fpn_convs) == 5
    assert all(isinstance(m, SASAModule) for m in neck.fpn_convs)
    strides = [m.attn.stride for m in neck.fpn_convs]
    assert strides == [1, 1, 1, 2, 2]
    # The first extra level reads the last backbone level (on_input).
    assert neck.fpn_convs[3].attn.in_channels == 128
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
                   for m in neck.modules())
    feats = [torch.rand(1, c, s, s) for c, s in ((16, 33), (32, 17),
                                                 (64, 9), (128, 5))]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 32, 17, 17),
                                              (1, 32, 9, 9), (1, 32, 5, 5),
                                              (1, 32, 3, 3), (1, 32, 2, 2)]


def test_fpn_defaults_and_norm():
    neck = SASAFPN([16, 32], 32, 2, norm_cfg=dict(type='BN'),
                   act_cfg=dict(type='ReLU'))
    module = neck.fpn_convs[0]
    assert (module.attn.kernel_size, module.attn.num_heads) == (7, 8)
    assert isinstance(module.norm, torch.nn.BatchNorm2d)
    assert isinstance(module.activate, torch.nn.ReLU)
    out = neck([torch.rand(2, 16, 8, 8), torch.rand(2, 32, 4, 4)])[0]
    assert out.min() >= 0


def test_head_layers_and_init():
    head = SASARetinaHead(
        num_classes=3, in_channels=32, stacked_convs=2, feat_channels=32)
    assert len(head.cls_convs) == len(head.reg_convs) == 2
    # 2 tower layers + the prediction layer per branch, all attention.
    assert len(_attention_layers(head)) == 6
    assert head.retina_cls.kernel_size == head.retina_reg.kernel_size == (
        1, 1)
    assert head.retina_cls.out_channels == 9 * 3
    assert head.retina_reg.out_channels == 9 * 4
    assert isinstance(head.cls_convs[0].activate, torch.nn.ReLU)
    assert head.cls_attn.activate is None
    head.init_weights()
    values = torch.cat([layer.value_conv.weight.flatten()
                        for layer in _attention_layers(head)])
    assert values.std().item() == pytest.approx(0.01, rel=0.1)
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.retina_cls.bias,
                          torch.full_like(head.retina_cls.bias, prior))


def test_head_forward_shares_layers_across_levels():
    head = SASARetinaHead(
        num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
        kernel_size=3, num_heads=4)
    feats = [torch.rand(2, 16, 8, 8), torch.rand(2, 16, 4, 4)]
    cls_scores, bbox_preds = head(feats)
    assert [tuple(c.shape) for c in cls_scores] == [(2, 27, 8, 8),
                                                    (2, 27, 4, 4)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 36, 8, 8),
                                                    (2, 36, 4, 4)]
    single = head.forward_single(feats[1])
    assert torch.equal(single[0], cls_scores[1])


def test_head_is_a_retina_head_with_fewer_parameters():
    kwargs = dict(num_classes=80, in_channels=256)
    conv_head = RetinaHead(**kwargs)
    attn_head = SASARetinaHead(**kwargs)
    count = sum(p.numel() for p in attn_head.parameters())
    assert count < sum(p.numel() for p in conv_head.parameters())


def test_head_rejects_conv_cfg():
    with pytest.raises(ValueError, match='conv_cfg'):
        SASARetinaHead(3, 32, conv_cfg=dict(type='Conv2d'))


def _retinanet_cfg(stem):
    return ConfigDict(
        type='RetinaNet',
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32),
        backbone=dict(
            type='mmtwins.SASAResNet',
            depth=26,
            stem=stem,
            base_channels=16,
            norm_eval=False),
        neck=dict(
            type='mmtwins.SASAFPN',
            in_channels=[64, 128, 256, 512],
            out_channels=32,
            start_level=1,
            add_extra_convs='on_input',
            num_outs=5),
        bbox_head=dict(
            type='mmtwins.SASARetinaHead',
            num_classes=3,
            in_channels=32,
            stacked_convs=1,
            feat_channels=32,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=3,
                ratios=[0.5, 1.0, 2.0],
                strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[.0, .0, .0, .0],
                target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(
                type='FocalLoss',
                use_sigmoid=True,
                gamma=2.0,
                alpha=0.25,
                loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.4,
                min_pos_iou=0,
                ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        test_cfg=dict(
            nms_pre=100,
            min_bbox_size=0,
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=10))


@pytest.mark.parametrize('stem', ['conv', 'attention'])
def test_all_attention_retinanet_loss_and_predict(stem):
    model = MMDET_MODELS.build(_retinanet_cfg(stem))
    model.init_weights()
    assert isinstance(model.neck, SASAFPN)
    assert isinstance(model.bbox_head, SASARetinaHead)
    packed = demo_mm_inputs(2, [(3, 64, 80), (3, 56, 72)], num_classes=3)
    data = model.data_preprocessor(packed, True)

    model.train()
    losses = model(**data, mode='loss')
    total = sum(sum(v) if isinstance(v, list) else v
                for v in losses.values())
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    assert torch.isfinite(total)
    total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
        feats = model(data['inputs'], mode='tensor')
    assert len(results) == 2
    for result in results:
        assert result.pred_instances.bboxes.shape[-1] == 4
        assert len(result.pred_instances) <= 10
    assert len(feats[0]) == 5  # class scores of the 5 levels
