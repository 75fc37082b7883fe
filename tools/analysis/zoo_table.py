"""Keep the model-zoo metafiles and READMEs in step with the configs.

Usage::

    python tools/analysis/zoo_table.py [--measure [NAME ...]] [--check]

``configs/{detection,segmentation}/metafile.yml`` hold one entry per
table-row config: the paper's numbers (typed from the papers) and our
measured parameters and FLOPs. ``--measure`` fills the measured fields by
running :func:`get_flops.measure` on each config (all of them, or the named
ones) at its collection's ``FLOPs Input`` (H x W). Every run then rewrites
the result tables of each folder's README between the markers
``<!-- zoo-table: COLLECTION -->`` and ``<!-- zoo-table-end -->`` from the
metafile, so no number in those tables is typed by hand. ``--check`` writes
nothing and exits with 1 when a README table or a metafile is stale.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FOLDERS = ('detection', 'segmentation')
TABLE_RE = re.compile(
    r'(<!-- zoo-table: (?P<name>[^>]+?) -->\n)(?P<body>.*?)'
    r'(<!-- zoo-table-end -->)', re.S)

# Metric columns in display order; a collection shows those its rows have.
METRICS = ('box AP', 'box AP50', 'box AP75', 'box APs', 'box APm', 'box APl',
           'mask AP', 'mask AP50', 'mask AP75', 'mIoU', 'mIoU(ms+flip)')

# Last-stage width of each Twins backbone, for the official code's unused
# classification head (Linear(C, 1000)) and final LayerNorm(C).
TWINS_LAST_DIM = {
    'Twins-PCPVT-S': 512, 'Twins-PCPVT-B': 512, 'Twins-PCPVT-L': 512,
    'Twins-SVT-S': 512, 'Twins-SVT-B': 768, 'Twins-SVT-L': 1024}


def official_unused_params(backbone: str) -> Optional[int]:
    """Parameters the official dense Twins code holds but never uses.

    The official detection/segmentation backbones keep the ImageNet
    classifier (``head``: C x 1000 weights + 1000 biases) and final norm
    (``norm``: 2C), which count in the papers' numbers but not in ours.
    ``None`` for non-Twins backbones.
    """
    dim = TWINS_LAST_DIM.get(backbone)
    if dim is None:
        return None
    return dim * 1000 + 1000 + 2 * dim


class _Dumper(yaml.SafeDumper):
    """YAML dumper without anchors/aliases, so entries stay self-contained."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def metafile_path(folder: str) -> str:
    return os.path.join(REPO, 'configs', folder, 'metafile.yml')


def readme_path(folder: str) -> str:
    return os.path.join(REPO, 'configs', folder, 'README.md')


def load_metafile(folder: str) -> Dict[str, Any]:
    with open(metafile_path(folder), encoding='utf-8') as f:
        return yaml.safe_load(f)


def dump_metafile(data: Dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=79,
                     allow_unicode=True)


def _fmt(value: Any, digits: Optional[int] = None) -> str:
    if value is None:
        return '—'
    if digits is not None:
        return f'{value:.{digits}f}'
    return str(value)


def render_table(models: List[Dict[str, Any]]) -> str:
    """Markdown table of one collection's rows, in metafile order."""
    present = {k for m in models for k in m['Results'][0]['Metrics']}
    metrics = [k for k in METRICS if k in present]
    head = (['Config', 'Backbone', 'Paper table'] + metrics +
            ['Params (M) paper', 'Params (M) ours', 'Ours + unused head',
             'FLOPs (G) paper', 'FLOPs (G) ours'])
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * len(head)) + '|']
    for m in models:
        meta = m['Metadata']
        values = m['Results'][0]['Metrics']
        unused = official_unused_params(meta['Backbone'])
        ours = meta.get('Params (M)')
        with_head = (None if unused is None or ours is None else
                     ours + unused / 1e6)
        cells = ([f'[{m["Name"]}]({m["Name"]}.py)', meta['Backbone'],
                  meta['Paper Table']] +
                 [_fmt(values.get(k), 1) for k in metrics] +
                 [_fmt(meta['Paper Params (M)']), _fmt(ours, 2),
                  _fmt(with_head, 2), _fmt(meta['Paper FLOPs (G)']),
                  _fmt(meta.get('FLOPs (G)'), 1)])
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def render_readme(folder: str, text: str) -> str:
    """The README text with every marked table regenerated."""
    data = load_metafile(folder)
    names = {c['Name'] for c in data['Collections']}

    def replace(match: re.Match) -> str:
        name = match.group('name')
        if name not in names:
            raise ValueError(f'{readme_path(folder)}: unknown collection '
                             f'{name!r} in a zoo-table marker')
        rows = [m for m in data['Models'] if m['In Collection'] == name]
        return match.group(1) + render_table(rows) + match.group(4)

    return TABLE_RE.sub(replace, text)


def measure_models(folder: str, only: Sequence[str] = ()) -> Dict[str, Any]:
    """Metafile data with measured params/FLOPs for the selected models."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from get_flops import load_config, measure

    data = load_metafile(folder)
    shapes = {c['Name']: c['Metadata']['FLOPs Input']
              for c in data['Collections']}
    for model in data['Models']:
        if only and model['Name'] not in only:
            continue
        height, width = map(int, shapes[model['In Collection']].split('x'))
        cfg = load_config(os.path.join(REPO, model['Config']))
        result = measure(cfg, (height, width))
        model['Metadata']['Params (M)'] = round(result['params'] / 1e6, 3)
        model['Metadata']['FLOPs (G)'] = round(result['flops'] / 1e9, 1)
        print(f'{model["Name"]}: {result["params"] / 1e6:.3f} M, '
              f'{result["flops"] / 1e9:.1f} G', flush=True)
    return data


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--measure', nargs='*', metavar='NAME',
                        help='measure all models, or only the named ones')
    parser.add_argument('--check', action='store_true',
                        help='only report whether anything is stale')
    args = parser.parse_args(argv)
    if args.check and args.measure is not None:
        parser.error('--check and --measure exclude each other')
    stale = []
    for folder in FOLDERS:
        if args.measure is not None:
            data = measure_models(folder, args.measure)
            with open(metafile_path(folder), 'w', encoding='utf-8') as f:
                f.write(dump_metafile(data))
        with open(metafile_path(folder), encoding='utf-8') as f:
            meta_text = f.read()
        if dump_metafile(yaml.safe_load(meta_text)) != meta_text:
            stale.append(metafile_path(folder))
            if not args.check:
                with open(metafile_path(folder), 'w', encoding='utf-8') as f:
                    f.write(dump_metafile(yaml.safe_load(meta_text)))
        with open(readme_path(folder), encoding='utf-8') as f:
            text = f.read()
        new = render_readme(folder, text)
        if new != text:
            stale.append(readme_path(folder))
            if not args.check:
                with open(readme_path(folder), 'w', encoding='utf-8') as f:
                    f.write(new)
    for path in stale:
        print(f'{"stale" if args.check else "updated"}: '
              f'{os.path.relpath(path, REPO)}')
    return 1 if args.check and stale else 0


if __name__ == '__main__':
    sys.exit(main())
