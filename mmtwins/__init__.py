"""mmtwins: Twins and Stand-Alone Self-Attention backbones for OpenMMLab.

Importing the package checks that the installed OpenMMLab stack is one that
mmtwins supports and registers its modules in the ``mmtwins`` scope.
"""
from .version import SUPPORTED, __version__


def _check_versions() -> None:
    """Fail with one clear line when an OpenMMLab package is out of range."""
    from importlib.metadata import PackageNotFoundError, version

    from mmengine.utils import digit_version

    dists = {'mmseg': 'mmsegmentation'}
    for name, (low, high) in SUPPORTED.items():
        dist = dists.get(name, name)
        try:
            found = version(dist)
        except PackageNotFoundError:
            continue  # optional at import time; the task that needs it says so
        if not (digit_version(low) <= digit_version(found)
                < digit_version(high)):
            raise RuntimeError(
                f'mmtwins {__version__} needs {dist}>={low},<{high}, but '
                f'{found} is installed; run `bash tools/setup_env.sh`.')


_check_versions()

# models: registers the mmtwins modules; utils: lets torch's safe loading
# read mmengine checkpoints (--resume on torch >= 2.6).
from . import models, utils  # noqa: E402,F401

__all__ = ['__version__']
