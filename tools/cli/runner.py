"""Build mmengine's Runner from a config, as mmdet's and mmseg's tools do."""
from mmengine.config import Config


def build_runner(cfg: Config):
    """``runner_type`` from the registry if the config names one, else
    mmengine's ``Runner``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
