"""Sphinx extension: the model-zoo page's tables, built from the metafiles.

``model_zoo.md`` holds the marker ``<!-- zoo-tables -->``; when Sphinx
reads that page, the marker is replaced by one section per collection of
``configs/detection/metafile.yml`` and ``configs/segmentation/metafile.yml``
with the table that ``tools/analysis/zoo_table.py`` renders for the
configs' READMEs. Nothing in the page is copied by hand, and a change to a
metafile rebuilds the page.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List

MARKER = '<!-- zoo-tables -->'
PAGE = 'model_zoo'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
TASKS = {'detection': 'COCO 2017 object detection and instance segmentation',
         'segmentation': 'ADE20K semantic segmentation'}
# zoo_table links each row to the config next to the README; the docs name
# the config's path instead.
_LINK = re.compile(r'\[(?P<name>[\w.-]+)\]\((?P=name)\.py\)')


def _zoo_table():
    """tools/analysis/zoo_table.py, the one renderer of the zoo tables."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from tools.analysis import zoo_table
    return zoo_table


def render_zoo() -> str:
    """Markdown of every collection's table, detection then segmentation."""
    zoo_table = _zoo_table()
    parts: List[str] = []
    for folder in zoo_table.FOLDERS:
        data: Dict[str, Any] = zoo_table.load_metafile(folder)
        parts.append(f'## {TASKS[folder]}\n\n'
                     f'Configs in `configs/{folder}/`; notes on each recipe '
                     f'in `configs/{folder}/README.md`.\n')
        for coll in data['Collections']:
            rows = [m for m in data['Models']
                    if m['In Collection'] == coll['Name']]
            table = _LINK.sub(lambda m: f'`{m.group("name")}`',
                              zoo_table.render_table(rows))
            paper = coll.get('Paper', {})
            source = (f'Paper: [{paper["Title"]}]({paper["URL"]}).\n\n'
                      if paper.get('URL') else '')
            parts.append(f'### {coll["Metadata"]["Title"]}\n\n{source}'
                         f'{table}')
    return '\n'.join(parts)


def _source_read(app, docname: str, source: List[str]) -> None:
    if docname != PAGE:
        return
    zoo_table = _zoo_table()
    for folder in zoo_table.FOLDERS:
        app.env.note_dependency(zoo_table.metafile_path(folder))
    if MARKER not in source[0]:
        raise ValueError(f'{PAGE}.md has no {MARKER} marker')
    source[0] = source[0].replace(MARKER, render_zoo())


def setup(app) -> Dict[str, Any]:
    app.connect('source-read', _source_read)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
