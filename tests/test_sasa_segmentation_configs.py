"""The SASA segmentation rows: eight configs (Semantic FPN with SASA-ResNet
26/38/50, UperNet with SASA-ResNet-50; conv stem and attention stem), each
with the training recipe of the ResNet row beside it, the SASA paper's
backbone parameter counts, zoo rows that say there is no paper result, and
mmseg's own tools (``tools/train.py``, ``MMSegInferencer``) running them.
Building, a loss step and a prediction of every row are in
``test_configs.py``."""
from __future__ import annotations

import os.path as osp
import subprocess
import sys

import pytest
import torch
from _zoo_helpers import REPO, load, zoo_table
from tools_helpers import make_mini

STEMS = {'convstem': 'conv', 'attnstem': 'attention'}
FPN = {(depth, tag): f'fpn_sasa_r{depth}_{tag}_80k_ade20k_512x512'
       for depth in (26, 38, 50) for tag in STEMS}
UPERNET = {(50, tag): f'upernet_sasa_r50_{tag}_160k_ade20k_512x512'
           for tag in STEMS}
ROWS = {**FPN, **UPERNET}
# SASA Table 1: parameters of the SASA-ResNets with the 1000-class
# ImageNet classifier (2048 x 1000 + 1000), the same for both stems.
PAPER_BACKBONE_PARAMS = {26: 10.3, 38: 14.1, 50: 18.0}
FC_HEAD = 2048 * 1000 + 1000
QUICKSTART = osp.join(REPO, 'configs', 'quickstart',
                      'fpn_sasa_r26_convstem_mini_ade.py')
RECIPE_KEYS = ('optim_wrapper', 'param_scheduler', 'train_cfg', 'val_cfg',
               'test_cfg', 'auto_scale_lr', 'default_hooks', 'custom_hooks',
               'val_evaluator', 'test_evaluator')


def _path(name):
    return f'configs/segmentation/{name}.py'


def _recipe(cfg):
    out = {key: cfg.get(key) for key in RECIPE_KEYS}
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        out[split] = (loader.batch_size, loader.dataset.type,
                      loader.dataset.pipeline)
    return out


@pytest.mark.parametrize('key', sorted(ROWS), ids=lambda k: ROWS[k])
def test_row_is_the_resnet_row_with_a_sasa_backbone(key):
    depth, tag = key
    name = ROWS[key]
    cfg = load(_path(name))
    backbone = cfg.model.backbone
    assert backbone.type == 'mmtwins.SASAResNet'
    assert (backbone.depth, backbone.stem) == (depth, STEMS[tag])
    assert (backbone.kernel_size, backbone.num_heads) == (7, 8)
    assert backbone.init_cfg is None and cfg.model.pretrained is None
    assert cfg.custom_imports == dict(imports=['mmtwins'],
                                      allow_failed_imports=False)
    # The ResNet row beside it: same recipe, same neck and heads.
    resnet = load(_path('fpn_r50_80k_ade20k_512x512' if name.startswith(
        'fpn_') else 'upernet_r101_160k_ade20k_512x512'))
    assert _recipe(cfg) == _recipe(resnet)
    for part in ('neck', 'decode_head', 'auxiliary_head',
                 'data_preprocessor'):
        assert cfg.model.get(part) == resnet.model.get(part), part


@pytest.mark.parametrize('key', sorted(ROWS), ids=lambda k: ROWS[k])
def test_backbone_has_the_paper_params(key):
    from mmtwins.models.backbones import SASAResNet
    cfg = load(_path(ROWS[key]))
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
    kwargs['norm_cfg'] = dict(type='BN', requires_grad=True)
    with torch.device('meta'):
        backbone = SASAResNet(**kwargs)
    count = sum(p.numel() for p in backbone.parameters()) + FC_HEAD
    assert abs(count / 1e6 - PAPER_BACKBONE_PARAMS[key[0]]) < 0.1, count


def test_zoo_rows_say_there_is_no_paper_result():
    zoo = zoo_table()
    models = {m['Name']: m for m in
              zoo.load_metafile('segmentation')['Models']}
    for name in ROWS.values():
        meta = models[name]['Metadata']
        assert meta['Paper Table'] == 'no paper result'
        assert meta['Paper Params (M)'] is None
        assert meta['Paper FLOPs (G)'] is None
        assert models[name]['Results'][0]['Metrics'] == {}
        assert meta['Params (M)'] > 0 and meta['FLOPs (G)'] > 0
    with open(zoo.readme_path('segmentation'), encoding='utf-8') as f:
        readme = f.read()
    for name in ROWS.values():
        row = next(line for line in readme.splitlines()
                   if line.startswith(f'| [{name}]'))
        assert '| no paper result |' in row


def test_mmseg_inferencer_runs_a_table_row(tmp_path):
    """mmseg's MMSegInferencer builds and runs a table row's config."""
    from mmengine.registry import MODELS, init_default_scope
    from mmseg.apis import MMSegInferencer
    cfg = load(_path(FPN[26, 'attnstem']))
    init_default_scope('mmseg')
    ckpt = str(tmp_path / 'random.pth')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, ckpt)
    # The row tests at (2048, 512); a small scale keeps the test cheap.
    resize = next(t for t in cfg.test_dataloader.dataset.pipeline
                  if t.type == 'Resize')
    resize.scale = (96, 64)
    inferencer = MMSegInferencer(cfg, ckpt, device='cpu')
    image = torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8).numpy()
    result = inferencer(image, return_datasamples=True)
    assert result.pred_sem_seg.data.shape == (1, 64, 96)
    assert int(result.pred_sem_seg.data.max()) < 150


@pytest.mark.slow
def test_mmseg_train_tool_trains_the_sasa_quickstart(tmp_path):
    """mmseg's own tools/train.py (not ours) trains the SASA segmentor."""
    import mmseg
    train = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools',
                     'train.py')
    mini = make_mini(str(tmp_path / 'mini'), 2, 1)
    root = osp.join(mini, 'ade', 'ADEChallengeData2016')
    loader = (f'dict(batch_size=2, num_workers=0, persistent_workers=False,'
              f' dataset=dict(data_root={root!r}))')
    cfg = tmp_path / 'sasa_seg.py'
    cfg.write_text(f"""_base_ = {QUICKSTART!r}
train_dataloader = {loader}
val_dataloader = {loader}
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")
    work = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, train, str(cfg), '--work-dir', str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / 'iter_2.pth').is_file()
    assert 'mIoU' in proc.stdout + proc.stderr
