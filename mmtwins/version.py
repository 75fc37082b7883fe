"""mmtwins version and the package versions it needs.

The versions live in one place, ``pyproject.toml`` (``[project]
dependencies``). :func:`requirements` reads them from there in a source
checkout, or from the installed package metadata otherwise;
``tools/setup_env.sh`` installs from the same file.
"""
from __future__ import annotations

import os.path as osp
from typing import List

__version__ = '0.1.0'

PYPROJECT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                     'pyproject.toml')


def _load_toml(path: str) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - older Pythons
        try:
            import tomli as tomllib
        except ImportError:
            from pip._vendor import tomli as tomllib
    with open(path, 'rb') as f:
        return tomllib.load(f)


def requirements() -> List[str]:
    """The ``[project] dependencies`` specifiers, e.g. ``'mmdet==3.3.0'``."""
    if osp.isfile(PYPROJECT):
        return list(_load_toml(PYPROJECT)['project']['dependencies'])
    from importlib.metadata import requires
    return [r for r in requires('mmtwins') or [] if 'extra ==' not in r]
