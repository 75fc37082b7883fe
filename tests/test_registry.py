"""The mmtwins scope resolves from mmdet and mmseg registries and configs."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import mmtwins
from mmtwins.models import TwinsPCPVT, TwinsSVT

TINY = dict(
    embed_dims=[16, 32, 32, 64],
    depths=[1, 1, 1, 1],
    num_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    sr_ratios=[8, 4, 2, 1])


def test_version():
    assert mmtwins.__version__


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_build_from_downstream_registries(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(dict(type='mmtwins.TwinsPCPVT', arch=TINY))
    assert isinstance(model, TwinsPCPVT)
    svt = MODELS.build(
        dict(type='mmtwins.TwinsSVT', arch=dict(TINY, window_sizes=[7] * 4)))
    assert isinstance(svt, TwinsSVT)


def test_no_clash_with_mmseg_twins():
    from mmseg.models.backbones import PCPVT, SVT
    from mmseg.registry import MODELS
    assert MODELS.get('PCPVT') is PCPVT and MODELS.get('SVT') is SVT
    assert MODELS.get('mmtwins.TwinsPCPVT') is TwinsPCPVT


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_build_from_config_under_default_scope(scope):
    cfg = Config(dict(
        default_scope=scope,
        custom_imports=dict(imports=['mmtwins'], allow_failed_imports=False),
        model=dict(type='mmtwins.TwinsSVT',
                   arch=dict(TINY, window_sizes=[7] * 4))))
    name = f'test-{scope}'
    if DefaultScope.check_instance_created(name):
        DefaultScope._instance_dict.pop(name)
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    assert isinstance(registry.build(cfg.model), TwinsSVT)
