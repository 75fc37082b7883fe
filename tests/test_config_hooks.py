"""Every config saves checkpoints crash-safely and checks its heads'
``num_classes`` against the dataset, through the mmtwins hooks."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope
from tools_helpers import REPO

from mmtwins.engine import NumClassCheckHook, SafeCheckpointHook

CONFIGS = sorted(
    p for folder in ('detection', 'segmentation', 'quickstart')
    for p in glob.glob(osp.join(REPO, 'configs', folder, '*.py')))


def test_every_config_is_listed():
    assert len(CONFIGS) > 60


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_uses_the_mmtwins_hooks(path):
    cfg = Config.fromfile(path)
    assert cfg.default_hooks.checkpoint.type == 'mmtwins.SafeCheckpointHook'
    assert [h['type'] for h in cfg.get('custom_hooks', [])].count(
        'mmtwins.NumClassCheckHook') == 1


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_hooks_build_from_a_task_scope(scope):
    init_default_scope(scope)
    hook = HOOKS.build(dict(type='mmtwins.SafeCheckpointHook', interval=2,
                            max_keep_ckpts=1))
    assert isinstance(hook, SafeCheckpointHook) and hook.max_keep_ckpts == 1
    assert isinstance(HOOKS.build(dict(type='mmtwins.NumClassCheckHook')),
                      NumClassCheckHook)
