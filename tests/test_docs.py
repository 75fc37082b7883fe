"""The documentation builds, and what it names exists.

* ``sphinx-build -W`` (warnings are errors) builds docs/en, with the
  model-zoo tables generated from the metafiles;
* every fenced ``bash``/``python`` block of README.md and docs/en carries
  a marker (docs/en/notes/writing_docs.md);
* every repository path, config name and ``{py:...}`` target the pages
  name exists, and every relative link (and its #anchor) resolves;
* the error catalogue lists every ``error:`` message in the tools' source;
* README.md stays short, and no page, docstring or comment reads like a
  record of how the project was built.
"""
import io
import os
import os.path as osp
import re
import subprocess
import sys
import tokenize

import pytest
import yaml
from docs_helpers import (
    CATALOGUE,
    DOCS,
    LANGUAGES,
    NEEDS,
    REPO,
    code_blocks,
    doc_files,
    error_message_sites,
    named_paths,
    normalise,
)

PAGES = doc_files()


def _rel(path):
    return osp.relpath(path, REPO)


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def _zoo_names():
    names = []
    for folder in ('detection', 'segmentation'):
        with open(osp.join(REPO, 'configs', folder, 'metafile.yml')) as f:
            names += [m['Name'] for m in yaml.safe_load(f)['Models']]
    return names


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    out = tmp_path / 'html'
    proc = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b',
         'html', '-d', str(tmp_path / 'doctrees'), DOCS, str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    # The zoo page is generated: every metafile model is in it, and the
    # Markdown source holds only the marker.
    html = (out / 'model_zoo.html').read_text(encoding='utf-8')
    names = _zoo_names()
    assert len(names) > 60
    missing = [n for n in names if n not in html]
    assert not missing
    assert 'TwinsPCPVT' in (out / 'api.html').read_text(encoding='utf-8')
    for page in ('errors', 'benchmarks', 'get_started', 'models/sasa',
                 'user_guides/deployment',
                 'user_guides/resume_and_crash_safety'):
        assert (out / f'{page}.html').is_file(), page


def test_zoo_page_is_not_hand_copied():
    text = _read(osp.join(DOCS, 'model_zoo.md'))
    assert text.count('<!-- zoo-tables -->') == 1
    assert not any(name in text for name in _zoo_names()
                   if name != 'mask_rcnn_twins_svt_s_3x_ms_coco')


def test_every_code_block_is_marked():
    unmarked, bad = [], []
    for page in PAGES:
        for block in code_blocks(page):
            if block.lang not in LANGUAGES:
                continue
            if block.marker is None:
                unmarked.append(block.where())
            elif block.marker == 'needs' and (
                    not block.needs or set(block.needs) - set(NEEDS)):
                bad.append(f'{block.where()}: needs {block.needs}')
            elif block.marker == 'config' and block.lang != 'python':
                bad.append(f'{block.where()}: a config block is python')
    assert not unmarked, f'blocks without a marker: {unmarked}'
    assert not bad, f'unknown needs (known: {sorted(NEEDS)}): {bad}'


def test_named_paths_exist():
    missing = []
    for page in PAGES:
        for path in sorted(named_paths(_read(page))):
            if path.startswith('docs/_build'):
                continue  # what the build writes
            if not osp.exists(osp.join(REPO, path)):
                missing.append(f'{_rel(page)}: {path}')
    assert not missing


_CONFIG_NAME = re.compile(
    r'`((?:retinanet|mask_rcnn|fpn|upernet)_[a-z0-9_]+)`')


def test_named_configs_exist():
    stems = {osp.splitext(f)[0] for _, _, files in
             os.walk(osp.join(REPO, 'configs')) for f in files
             if f.endswith('.py')}
    missing = []
    for page in PAGES:
        for name in _CONFIG_NAME.findall(_read(page)):
            if name not in stems:
                missing.append(f'{_rel(page)}: {name}')
    assert not missing


_ROLE = re.compile(r'\{py:(?:mod|class|func|meth)\}`(?:[^`<]*<)?~?'
                   r'([\w.]+)>?`')


def test_python_references_import():
    import importlib
    missing = []
    for page in PAGES:
        for target in _ROLE.findall(_read(page)):
            parts = target.split('.')
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module('.'.join(parts[:cut]))
                except ImportError:
                    continue
                for attr in parts[cut:]:
                    obj = getattr(obj, attr, None)
                break
            else:
                obj = None
            if obj is None:
                missing.append(f'{_rel(page)}: {target}')
    assert not missing


_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _slug(heading):
    """GitHub's (and MyST's) anchor of a heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def _anchors(path):
    text = re.sub(r'```.*?```', '', _read(path), flags=re.S)
    return {_slug(m) for m in re.findall(r'^#{1,6}\s+(.*)$', text, re.M)}


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r'```.*?```', '', _read(page), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r'[a-z]+:', target):
                continue  # http(s), mailto
            file, _, anchor = target.partition('#')
            dest = osp.normpath(osp.join(osp.dirname(page), file)) \
                if file else page
            if not osp.exists(dest):
                broken.append(f'{_rel(page)}: {target}')
            elif anchor and dest.endswith('.md') and \
                    anchor not in _anchors(dest):
                broken.append(f'{_rel(page)}: {target} (no such heading)')
    assert not broken


def test_error_catalogue_lists_every_error_line():
    sites = error_message_sites()
    # the scan finds the tools' messages (ToolError, InputError, argparse,
    # SystemExit, diagnoses, shell scripts)
    assert len(sites) > 60
    assert any(s.path.endswith('.sh') for s in sites)
    page = normalise(_read(CATALOGUE))
    missing = [f'{s.where()}: {s.key}' for s in sites
               if normalise(s.key) not in page]
    assert not missing, ('add these error lines to docs/en/errors.md: '
                         f'{missing}')


def test_readme_is_short():
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        assert len(f.readlines()) <= 250


# How a record of the project's making reads; nothing in the docs,
# docstrings, comments or tool output may.
HISTORY = re.compile(
    r'\bsessions? \d|\b(?:this|previous|next|earlier|in) session\b|'
    r'\bissues? \d+|\b(?:before|after) (?:the )?issues?\b|the issue\b|'
    r'\bengineers?\b|kept for the record', re.I)
_OWN = {osp.abspath(__file__), osp.join(REPO, 'tests', 'docs_helpers.py')}


def _prose(path):
    """The text of a file that people read: all of a Markdown/YAML file,
    the comments and string literals of Python, the comments and echo
    lines of shell scripts."""
    text = _read(path)
    if path.endswith('.py'):
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        return '\n'.join(t.string for t in tokens
                         if t.type in (tokenize.COMMENT, tokenize.STRING))
    if path.endswith(('.sh', '.cpp')):
        return '\n'.join(line for line in text.splitlines()
                         if re.search(r'#|//|echo', line))
    return text


def test_no_development_history():
    files = list(PAGES)
    for top in ('mmtwins', 'tools', 'configs', 'tests'):
        for root, dirs, names in os.walk(osp.join(REPO, top)):
            dirs[:] = [d for d in dirs if d != '__pycache__']
            files += [osp.join(root, n) for n in names
                      if n.endswith(('.py', '.md', '.sh', '.yml', '.cpp'))]
    found = []
    for path in files:
        if osp.abspath(path) in _OWN:
            continue
        for line in _prose(path).splitlines():
            if HISTORY.search(line):
                found.append(f'{_rel(path)}: {line.strip()[:100]}')
    assert not found, found
