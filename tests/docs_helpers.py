"""Read the documentation the way the docs tests check it.

* :func:`doc_files`: README.md and every Markdown page under docs/en/.
* :func:`code_blocks`: the fenced code blocks of a page with the marker
  comment on the line before each (``<!-- runnable -->``,
  ``<!-- config -->`` or ``<!-- needs: ... -->``; see
  docs/en/notes/writing_docs.md).
* :func:`error_message_sites`: every ``error:`` message the tools can
  print, found in the source, with the literal text the error catalogue
  (docs/en/errors.md) must contain for it.
"""
from __future__ import annotations

import ast
import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = osp.join(REPO, 'docs', 'en')
CATALOGUE = osp.join(DOCS, 'errors.md')

#: What a block may need instead of being run; such blocks are checked for
#: the paths they name only.
NEEDS = {
    'gpu': 'a CUDA GPU',
    'coco': 'COCO 2017 under data/coco',
    'ade20k': 'ADE20K under data/ade/ADEChallengeData2016',
    'slurm': 'a Slurm cluster',
    'network': 'the package registry or a download',
    'checkpoint': 'a trained checkpoint or a file the reader provides',
    'suite': 'runs the test suite, or is run by it',
    'long': 'takes minutes (benchmarks, ONNX export)',
}
LANGUAGES = ('bash', 'python')
_FENCE = re.compile(r'^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w-]*)\s*$')
_MARKER = re.compile(r'^\s*<!--\s*(?P<kind>runnable|config|needs:\s*'
                     r'(?P<needs>[\w\s-]+?))\s*-->\s*$')


@dataclass
class Block:
    """One fenced code block of a page."""

    path: str  # the page
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: Optional[str]  # 'runnable', 'config', 'needs' or None
    needs: List[str]

    def where(self) -> str:
        return f'{osp.relpath(self.path, REPO)}:{self.line}'


def doc_files() -> List[str]:
    """README.md and the Markdown pages of docs/en (not _build)."""
    files = [osp.join(REPO, 'README.md')]
    for root, dirs, names in os.walk(DOCS):
        dirs[:] = sorted(d for d in dirs if not d.startswith(('_', '.')))
        files += [osp.join(root, n) for n in sorted(names)
                  if n.endswith('.md')]
    return files


def code_blocks(path: str) -> List[Block]:
    """The fenced code blocks of ``path``, with their markers."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match.group('fence'), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        marker, needs = None, []
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        found = _MARKER.match(lines[prev]) if prev >= 0 else None
        if found:
            marker = found.group('kind').split(':')[0]
            needs = (found.group('needs') or '').split()
        blocks.append(Block(path, start + 1, match.group('lang'),
                            '\n'.join(body) + '\n', marker, needs))
        i += 1
    return blocks


# Paths a block names: repository files and folders the docs point to.
_PATH = re.compile(r'(?<![\w./-])((?:configs|tools|mmtwins|docs|tests)/'
                   r'[\w./{}*-]*[\w}*])')


def named_paths(text: str) -> Set[str]:
    """Repository paths named in ``text`` (configs/, tools/, mmtwins/,
    docs/, tests/), without globs and brace patterns."""
    return {p for p in _PATH.findall(text)
            if not any(c in p for c in '{}*')}


# ------------------------------------------------------------ error sites

@dataclass
class ErrorSite:
    """One place in the source that can print an ``error:`` line."""

    path: str
    line: int
    key: str  # the longest literal part of the message

    def where(self) -> str:
        return f'{osp.relpath(self.path, REPO)}:{self.line}'


# Literal parts shorter than this many words are not a message of their
# own (e.g. f'{src}: {err}' passes another error's text through).
MIN_KEY_WORDS = 2
_STRIP = ' \t;:,.()"\''


def _literals(node: ast.AST) -> Iterator[str]:
    """The string constants an f-string / concatenation is built from."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        for value in node.values:
            yield from _literals(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield from _literals(node.left)
        yield from _literals(node.right)


def message_key(node: ast.AST) -> Optional[str]:
    """The longest literal part of a message expression, normalised, or
    None when it has no part of :data:`MIN_KEY_WORDS` words."""
    parts = [' '.join(s.split()).strip(_STRIP) for s in _literals(node)]
    parts = [p[len('error:'):].strip(_STRIP) if p.startswith('error:')
             else p for p in parts]
    parts = [p for p in parts if len(p.split()) >= MIN_KEY_WORDS]
    return max(parts, key=len) if parts else None


def _python_files() -> Iterator[str]:
    for top in ('tools', 'mmtwins'):
        for root, dirs, names in os.walk(osp.join(REPO, top)):
            dirs[:] = sorted(d for d in dirs if d != '__pycache__')
            for name in sorted(names):
                if name.endswith('.py'):
                    yield osp.join(root, name)


def _user_error_classes(trees: Dict[str, ast.AST]) -> Set[str]:
    """ToolError, InputError and every class derived from them."""
    bases: Dict[str, Set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {
                    b.id if isinstance(b, ast.Name) else
                    getattr(b, 'attr', '') for b in node.bases}
    found = {'ToolError', 'InputError'}
    grew = True
    while grew:
        new = {n for n, b in bases.items() if b & found} - found
        found |= new
        grew = bool(new)
    return found


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else ''
        return f'{owner}.{func.attr}'
    return ''


def _is_diagnosis(func: ast.AST) -> bool:
    """A diagnosis: ``f(exc, ctx)`` returning a message or None."""
    if not isinstance(func, ast.FunctionDef):
        return False
    return [a.arg for a in func.args.args] == ['exc', 'ctx']


def error_message_sites() -> List[ErrorSite]:
    """Every message the tools print as an ``error:`` line, by source.

    Python (tools/ and mmtwins/): the messages of ``ToolError``,
    ``InputError`` and their subclasses (the tools print them through
    ``tools/cli/errors.py``), of ``parser.error`` (argparse's
    ``PROG: error: ...``), of ``SystemExit`` / ``sys.exit`` strings that
    start with ``error:``, and the messages the diagnoses ``f(exc, ctx)``
    return. Shell (tools/**/*.sh): ``echo "error: ..."``.
    """
    trees = {}
    for path in _python_files():
        with open(path, encoding='utf-8') as f:
            trees[path] = ast.parse(f.read(), path)
    classes = _user_error_classes(trees)
    sites: List[ErrorSite] = []

    def add(path, node, message):
        key = message_key(message)
        if key:
            sites.append(ErrorSite(path, node.lineno, key))

    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                name = _call_name(node)
                first = node.args[0]
                text = ''.join(_literals(first)).lstrip()
                if name.split('.')[-1] in classes or \
                        name == 'parser.error' or \
                        (name in ('SystemExit', 'sys.exit')
                         and 'error:' in text):
                    add(path, node, first)
            elif _is_diagnosis(node):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and sub.value is not None:
                        add(path, sub, sub.value)
    shell = re.compile(r'echo\s+"error:\s*(?P<msg>.*?)"\s*>&2')
    for root, _dirs, names in os.walk(osp.join(REPO, 'tools')):
        for name in sorted(names):
            if not name.endswith('.sh'):
                continue
            path = osp.join(root, name)
            with open(path, encoding='utf-8') as f:
                for number, line in enumerate(f, 1):
                    match = shell.search(line)
                    if match:
                        # $VAR and $(...) parts split the literal text.
                        parts = re.split(r'\$\((?:[^()]|\([^()]*\))*\)|'
                                         r'\$\{?\w+\}?|\'', match['msg'])
                        node = ast.Constant(max(
                            (p for p in parts), key=len))
                        node.lineno = number
                        add(path, node, node)
    return sites


def normalise(text: str) -> str:
    """Whitespace collapsed, for comparing messages with page text."""
    return ' '.join(text.split())
