"""mmtwins: Twins and Stand-Alone Self-Attention backbones for OpenMMLab.

Importing the package checks that the installed packages satisfy the
versions pinned in ``pyproject.toml`` and registers its modules in the
``mmtwins`` scope.
"""
from .version import __version__, requirements


def _check_versions() -> None:
    """Fail with one clear line when an installed package is out of range.

    A package that is not installed is skipped: the task that needs it
    says so when it is used.
    """
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    for spec in requirements():
        req = Requirement(spec)
        try:
            found = version(req.name)
        except PackageNotFoundError:
            continue
        if not req.specifier.contains(found, prereleases=True):
            raise RuntimeError(
                f'mmtwins {__version__} needs {req}, but {req.name} {found} '
                'is installed; run `bash tools/setup_env.sh`.')


_check_versions()

# models/engine: register the mmtwins modules and hooks; utils: lets torch's
# safe loading read mmengine checkpoints (--resume on torch >= 2.6).
from . import engine, models, utils  # noqa: E402,F401

__all__ = ['__version__']
