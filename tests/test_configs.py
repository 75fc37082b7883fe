"""Every config under ``configs/`` loads; every table-row config builds its
model under its default scope and runs a loss step and a prediction on a
tiny CPU batch (a 3x row whose model equals its 1x row's reuses that run).
Also pins the training recipes of the Twins rows to the official configs
(paper_tables.md §A8)."""
from __future__ import annotations

import os

import pytest
import torch
from _zoo_helpers import (
    PARAMS,
    all_configs,
    build,
    count,
    load,
    param_count,
    primitive_configs,
    scope,
    stem,
    table_configs,
)

TABLE = table_configs()
CONFIGS = all_configs()  # the table rows and any other folder's configs
PRIMITIVES = primitive_configs()
SIZE = 64  # tiny input: stage maps of 16, 8, 4 and 2 pixels
HEAVY = ('_l_', 'x101_64x4d', 'swin_b', 'swin_s', 'r101', 'x101_32x4d')


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny convolutions run far faster on one thread than on several
    competing ones (OpenMP spin-waits on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_config_lists_are_not_empty():
    assert len(TABLE) >= 60, TABLE
    assert set(TABLE) <= set(CONFIGS)
    assert len(PRIMITIVES) >= 10, PRIMITIVES


@pytest.mark.parametrize('path', PRIMITIVES + CONFIGS)
def test_config_loads(path):
    cfg = load(path)
    if path in CONFIGS:
        assert cfg.default_scope in ('mmdet', 'mmseg')
        assert 'model' in cfg and 'train_dataloader' in cfg
        if 'mmtwins.' in repr(cfg.to_dict()):
            assert cfg.custom_imports == dict(
                imports=['mmtwins'], allow_failed_imports=False)


def _det_batch(model_cfg):
    from mmdet.testing import demo_mm_inputs
    roi_head = model_cfg.get('roi_head', {})
    head = roi_head.get('bbox_head', model_cfg.get('bbox_head'))
    return demo_mm_inputs(
        batch_size=2, image_shapes=[(3, SIZE, SIZE)] * 2, num_items=[3, 2],
        num_classes=head.num_classes, with_mask='mask_head' in roi_head)


def _seg_batch(num_classes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, SIZE, SIZE),
                                    dtype=torch.uint8))
        labels = torch.randint(0, num_classes, (1, SIZE, SIZE))
        samples.append(SegDataSample(
            gt_sem_seg=PixelData(data=labels),
            metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                          pad_shape=(SIZE, SIZE))))
    return dict(inputs=inputs, data_samples=samples)


def _params(path):
    marks = [pytest.mark.slow] if any(h in path for h in HEAVY) else []
    return pytest.param(path, marks=marks, id=os.path.basename(path))


def _twin_1x(path):
    """The 1x config whose model a 3x config repeats (only the recipe
    differs), or ``None``."""
    name = stem(path)
    if '_3x_ms_' not in name:
        return None
    twin = os.path.join(os.path.dirname(path),
                        name.replace('_3x_ms_', '_1x_') + '.py')
    return twin if twin in TABLE else None


@pytest.mark.parametrize('path', [_params(p) for p in CONFIGS])
def test_build_loss_and_predict(path):
    cfg = load(path)
    twin = _twin_1x(path)
    if twin is not None and load(twin).model == cfg.model:
        # Same model as its 1x row, which builds and runs it; only the
        # training recipe differs (checked by the recipe tests).
        PARAMS[stem(path)] = param_count(stem(twin))
        return
    if cfg.default_scope == 'mmseg':
        # Train-time padding goes to the crop size; keep the batch tiny.
        cfg.model.data_preprocessor.size = (SIZE, SIZE)
    if 'roi_head' in cfg.model:
        # A few RoIs instead of 512 sampled / 1000 proposals per image: the
        # RoI heads' cost, not the config, is what this would measure.
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=64)
        cfg.model.train_cfg.rcnn.sampler.num = 32
        cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=32)
    torch.manual_seed(0)
    model = build(cfg)
    PARAMS[stem(path)] = count(model)
    if cfg.default_scope == 'mmdet':
        batch = _det_batch(cfg.model)
    else:
        batch = _seg_batch(cfg.model.decode_head.num_classes)

    with scope(cfg):
        model.train()
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        assert torch.isfinite(loss) and loss.requires_grad, losses

        model.eval()
        with torch.no_grad():
            results = model(**model.data_preprocessor(batch, False),
                            mode='predict')
    assert len(results) == 2
    if cfg.default_scope == 'mmdet':
        assert all('bboxes' in r.pred_instances for r in results)
    else:
        assert results[0].pred_sem_seg.data.shape[-2:] == (SIZE, SIZE)


# The Twins rows' recipes, from the official configs (paper_tables.md §A8).
# (config prefix, schedule) -> (lr, weight decay, epochs / iterations,
# images per GPU, no-decay keys)
RECIPES = {
    ('retinanet', '1x'): (1e-4, 1e-4, 12, 2, False),
    ('mask_rcnn', '1x'): (2e-4, 1e-4, 12, 2, False),
    ('retinanet', '3x'): (1e-4, 0.05, 36, 2, True),
    ('mask_rcnn', '3x'): (1e-4, 0.05, 36, 2, True),
    ('fpn', '80k'): (1e-4, 1e-4, 80000, 4, False),
    ('upernet', '160k'): (6e-5, 0.01, 160000, 2, True),
}
TWINS = [p for p in TABLE if '_twins_' in p]  # the paper-table rows only


def test_every_twins_row_has_a_recipe():
    assert len(TWINS) == 32
    for path in TWINS:
        name = stem(path)
        assert any(name.startswith(f'{k}_twins_') and f'_{s}_' in name
                   for k, s in RECIPES), name


@pytest.mark.parametrize('path', TWINS)
def test_twins_recipe_follows_official_config(path):
    cfg = load(path)
    name = stem(path)
    (kind, sched), (lr, wd, length, per_gpu, no_decay) = next(
        (key, value) for key, value in RECIPES.items()
        if name.startswith(f'{key[0]}_twins_') and f'_{key[1]}_' in name)
    optim = cfg.optim_wrapper.optimizer
    assert optim.type == 'AdamW'
    assert (optim.lr, optim.weight_decay) == (lr, wd)
    assert cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters')) \
        == length
    batch = cfg.train_dataloader.batch_size
    # Official PCPVT-S UperNet config keeps 4 images per GPU (batch 32).
    expect = 4 if name.startswith('upernet_twins_pcpvt_s') else per_gpu
    assert batch == expect
    assert cfg.auto_scale_lr.enable
    total = 8 * batch if kind in ('retinanet', 'mask_rcnn', 'upernet') \
        else 16
    assert cfg.auto_scale_lr.base_batch_size == total
    keys = cfg.optim_wrapper.get('paramwise_cfg', {}).get('custom_keys', {})
    assert (keys == {'pos_block': dict(decay_mult=0.),
                     'norm': dict(decay_mult=0.)}) == no_decay
    backbone = cfg.model.backbone
    svt_l_seg = '_svt_l_' in name and kind in ('fpn', 'upernet')
    assert backbone.drop_path_rate == (0.3 if svt_l_seg else 0.2)
    if '_svt_' in name:
        assert backbone.lsa_pad == ('zero' if kind in ('retinanet',
                                                       'mask_rcnn')
                                    else 'mmseg')
    assert backbone.init_cfg.type == 'Pretrained'
    arch = backbone.arch
    assert arch[0] == name.split('_twins_')[1].split('_')[1]
    assert f'twins_{name.split("_twins_")[1].split("_")[0]}_{arch}' in \
        backbone.init_cfg.checkpoint
    if kind == 'mask_rcnn' and sched == '3x':
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == 512.
