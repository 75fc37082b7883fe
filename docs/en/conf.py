"""Sphinx configuration of the mmtwins documentation (MyST Markdown).

Build: ``sphinx-build -W docs/en docs/_build/html``. The model-zoo tables
come from ``configs/*/metafile.yml`` at build time (``_ext/zoo_tables.py``)
and the API reference from the docstrings of the installed ``mmtwins``.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, '_ext'))
sys.path.insert(0, REPO)

import mmtwins  # noqa: E402

project = 'mmtwins'
author = 'mmtwins contributors'
copyright = 'mmtwins contributors, Apache-2.0'
release = version = mmtwins.__version__

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'zoo_tables',
]
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
# Headings get anchors, so pages link to sections (page.md#a-heading).
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

# Every reference to an mmtwins object must resolve (-W makes a dangling one
# an error); references to other packages are plain text (no intersphinx:
# the build needs no network).
nitpicky = True
nitpick_ignore_regex = [(r'py:.*', r'(?!mmtwins\.).*')]
# The private base class of TwinsPCPVT and TwinsSVT (shown as their base).
nitpick_ignore = [('py:class', 'mmtwins.models.backbones.twins.TwinsBackbone')]

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'show-inheritance': True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'alabaster'
html_title = f'mmtwins {release}'
