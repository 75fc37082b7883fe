"""The ``mmtwins`` registry scope.

Every registry here is a child of mmengine's root registry, so a config whose
``default_scope`` is ``mmdet`` or ``mmseg`` can say ``type='mmtwins.TwinsSVT'``
or ``type='mmtwins.SafeCheckpointHook'`` and mmengine finds the class by
walking the registry tree (it imports this module on first use of the
``mmtwins.`` prefix). Nothing is registered into mmdet's or mmseg's own
registries, so names never clash with mmseg's ``PCPVT``/``SVT``.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmtwins',
    locations=['mmtwins.models'])
HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='mmtwins',
    locations=['mmtwins.engine'])
