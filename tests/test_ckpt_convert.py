"""Checkpoint conversion and strict pretrained loading of Twins backbones."""
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from mmtwins.models import TwinsPCPVT, TwinsSVT
from mmtwins.utils.ckpt_convert import (
    CheckpointFormatError,
    convert_checkpoint,
    detect_format,
    mmpretrain_to_official,
    official_to_mmseg,
)
from mmtwins.utils.pretrained import load_twins_pretrained

TINY = dict(
    embed_dims=[16, 32, 32, 64],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    sr_ratios=[8, 4, 2, 1],
    window_sizes=[7, 7, 7, 7])


def official_classifier_state(model):
    """What an official/timm ImageNet checkpoint holds for ``model``."""
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()
             if not k.startswith('norm_list.')}
    c = model.arch['embed_dims'][-1]
    state.update({'norm.weight': torch.ones(c), 'norm.bias': torch.zeros(c),
                  'head.weight': torch.randn(10, c),
                  'head.bias': torch.zeros(10)})
    return state


def to_mmpretrain(state):
    """Official -> mmpretrain 1.x names (classification layout)."""
    out = {}
    for k, v in state.items():
        k = k.replace('blocks.', 'stages.')
        k = k.replace('mlp.fc1', 'ffn.layers.0.0')
        k = k.replace('mlp.fc2', 'ffn.layers.1').replace('.proj.0.', '.proj.')
        k = k.replace('pos_block.', 'position_encodings.')
        if k.startswith('patch_embeds'):
            k = k.replace('.proj.', '.projection.')
        if k.startswith('norm.'):
            k = 'norm_after_stage3.' + k[5:]
        if k.startswith('head.'):
            out['head.fc.' + k[5:]] = v
            continue
        out['backbone.' + k] = v
    return out


def load(model, state, tmp_path, wrap=lambda s: s):
    path = osp.join(tmp_path, 'ckpt.pth')
    torch.save(wrap(state), path)
    model.init_cfg = dict(type='Pretrained', checkpoint=path)
    model.init_weights()
    return path


@pytest.mark.parametrize('wrap', [
    lambda s: s, lambda s: {'state_dict': s}, lambda s: {'model': s},
    lambda s: {'model': {'module.' + k: v for k, v in s.items()}}
])
def test_official_checkpoint_loads_strictly(tmp_path, wrap):
    model = TwinsSVT(TINY)
    state = official_classifier_state(model)
    load(model, state, tmp_path, wrap)
    own = model.state_dict()
    for k, v in own.items():
        if k.startswith('norm_list.'):  # not in ImageNet checkpoints
            assert torch.equal(v, torch.ones_like(v) if k.endswith('weight')
                               else torch.zeros_like(v))
        else:
            assert torch.equal(v, state[k]), k


def test_init_cfg_through_mmengine_build(tmp_path):
    from mmdet.registry import MODELS
    arch = {k: v for k, v in TINY.items() if k != 'window_sizes'}
    state = official_classifier_state(TwinsPCPVT(arch))
    path = osp.join(tmp_path, 'pcpvt.pth')
    torch.save(state, path)
    built = MODELS.build(
        dict(type='mmtwins.TwinsPCPVT', arch=arch,
             init_cfg=dict(type='Pretrained', checkpoint=path)))
    built.init_weights()
    assert torch.equal(built.blocks[1][0].attn.q.weight,
                       state['blocks.1.0.attn.q.weight'])


def test_mmseg_and_mmpretrain_checkpoints_load(tmp_path):
    ref = TwinsSVT(TINY)
    state = official_classifier_state(ref)
    backbone = {k: v for k, v in state.items()
                if not k.startswith(('norm.', 'head.'))}
    mmseg = {'backbone.' + k: v for k, v in
             official_to_mmseg(backbone).items()}
    mmseg['decode_head.conv_seg.weight'] = torch.zeros(3, 8, 1, 1)
    for fmt_state in (mmseg, to_mmpretrain(state)):
        model = TwinsSVT(TINY)
        load(model, fmt_state, tmp_path, lambda s: {'state_dict': s})
        for k, v in backbone.items():
            assert torch.equal(model.state_dict()[k], v), k


def test_missing_and_unexpected_keys_are_named(tmp_path):
    model = TwinsSVT(TINY)
    state = official_classifier_state(model)
    del state['blocks.1.1.mlp.fc1.weight']
    with pytest.raises(CheckpointFormatError,
                       match=r'missing keys: blocks\.1\.1\.mlp\.fc1\.weight'):
        load(model, state, tmp_path)
    state = official_classifier_state(model)
    state['blocks.1.9.mlp.fc1.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError,
                       match=r'unexpected keys: blocks\.1\.9\.mlp'):
        load(TwinsSVT(TINY), state, tmp_path)
    state = official_classifier_state(model)
    state['blocks.0.0.mlp.fc1.weight'] = torch.zeros(3, 3)
    with pytest.raises(CheckpointFormatError, match='shape mismatch'):
        load(TwinsSVT(TINY), state, tmp_path)


def test_unknown_keys_are_refused():
    with pytest.raises(CheckpointFormatError,
                       match=r'unknown keys .*blocks\.0\.0\.attn\.rel_pos'):
        convert_checkpoint({'blocks.0.0.attn.rel_pos.weight': torch.zeros(1)})
    with pytest.raises(CheckpointFormatError,
                       match='unknown keys for a mmseg'):
        convert_checkpoint({'layers.0.0.mystery.weight': torch.zeros(1)})
    with pytest.raises(CheckpointFormatError, match='not a Twins backbone'):
        detect_format({'conv1.weight': torch.zeros(1)})
    with pytest.raises(CheckpointFormatError, match='no state dict'):
        convert_checkpoint({'meta': {}})


def test_stages_beyond_out_indices_are_dropped_and_logged(tmp_path):
    model = TwinsSVT(TINY, out_indices=(0, 1))
    state = official_classifier_state(TwinsSVT(TINY))
    load(model, state, tmp_path)
    assert torch.equal(model.blocks[1][1].attn.q.weight,
                       state['blocks.1.1.attn.q.weight'])


def test_mmpretrain_dense_stage_norms_become_norm_list():
    state = {f'norm_after_stage{i}.weight': torch.ones(2) for i in range(4)}
    state.update({f'patch_embeds.{i}.norm.weight': torch.ones(2)
                  for i in range(4)})
    out = mmpretrain_to_official(state)
    assert {f'norm_list.{i}.weight' for i in range(4)} <= set(out)


def run_cli(repo_root, *args):
    """Run tools/model_converters/twins2mmtwins.py's main in-process."""
    import importlib.util
    path = osp.join(repo_root, 'tools/model_converters/twins2mmtwins.py')
    spec = importlib.util.spec_from_file_location('twins2mmtwins', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def test_converter_cli(tmp_path, repo_root, capsys):
    ref = TwinsSVT(TINY)
    state = official_classifier_state(ref)
    backbone = {k: v for k, v in state.items()
                if not k.startswith(('norm.', 'head.'))}
    full = {'backbone.' + k: v for k, v in official_to_mmseg(backbone).items()}
    full['backbone.norm.weight'] = torch.ones(64)  # mmseg converter leftover
    full['decode_head.conv_seg.bias'] = torch.zeros(3)
    src, dst = osp.join(tmp_path, 'in.pth'), osp.join(tmp_path, 'out.pth')
    torch.save({'state_dict': full, 'meta': {}}, src)
    assert run_cli(repo_root, src, dst) == 0
    out = capsys.readouterr().out
    assert 'mmseg layout' in out and 'backbone.norm.weight' in out
    out = torch.load(dst, weights_only=True)['state_dict']
    assert out['decode_head.conv_seg.bias'].shape == (3, )
    model = TwinsSVT(TINY)
    model.load_state_dict({k[9:]: v for k, v in out.items()
                           if k.startswith('backbone.')}, strict=False)
    for k, v in backbone.items():
        assert torch.equal(model.state_dict()[k], v)

    torch.save({'layers.0.0.oops.weight': torch.zeros(1)}, src)
    with pytest.raises(SystemExit, match='2'):
        run_cli(repo_root, src, dst)
    err = capsys.readouterr().err
    assert 'layers.0.0.oops.weight' in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit, match='2'):
        run_cli(repo_root, osp.join(tmp_path, 'nope.pth'), dst)
    assert 'checkpoint not found' in capsys.readouterr().err


def test_loader_logs_what_it_drops(tmp_path):
    model = TwinsSVT(TINY)
    path = osp.join(tmp_path, 'c.pth')
    torch.save(official_classifier_state(model), path)
    logger = MMLogger.get_instance('twins-test-log', log_level='INFO')
    messages = []
    logger.info = messages.append
    load_twins_pretrained(model, path, logger)
    text = '\n'.join(messages)
    assert 'dropped classifier keys' in text and 'head.weight' in text
    assert 'norm_list' in text
