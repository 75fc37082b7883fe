#!/usr/bin/env python
"""Gather test runs into one Markdown results table beside the paper.

``python tools/analysis/report.py WORK_DIR [WORK_DIR ...]`` reads the
``metrics.json`` that ``tools/test.py`` wrote into each work dir (a
``metrics.json`` path works too) and prints a model-zoo style table per
task: detection (box AP, AP50, AP75, APs/m/l, mask AP) and segmentation
(mIoU, mAcc, aAcc). Each row also shows the paper's number for the same
config (matched by config file name in the model-zoo metafiles
``configs/*/metafile.yml``, see :mod:`tools.cli.paper_results`) and the
difference in points: box AP for detection, and mask AP as well when a run
has instance masks (Mask R-CNN); runs of configs without a paper number
(e.g. the quickstart) show ``-`` there. A run tested with ``--tta`` is
compared with the paper's multi-scale + flip mIoU.

``--out`` writes the Markdown to a file, ``--json`` the same rows as JSON,
where the metric values are fractions (0-1), plus ``detection`` and
``segmentation`` keys holding the first run of each task (the quickstart's
``report.json``). ``--figures`` adds a "Pictures" section that shows the
given PNGs (training curves, galleries) under titles made from their file
names, linked relative to the report so that it renders on GitHub.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.cli.eval_report import DET_COLUMNS, SEG_COLUMNS, load_report  # noqa: E402
from tools.cli.paper_results import load_paper_results, paper_result  # noqa: E402

# (summary key, column title) per task; the first one is the headline.
_DET = [(f'bbox_{k}', 'box ' + v if k == 'mAP' else v)
        for k, v in DET_COLUMNS.items()] + [('segm_mAP', 'mask AP')]
_SEG = [(k, v) for k, v in SEG_COLUMNS.items()]
TASK_TITLES = {'detection': 'Detection', 'segmentation': 'Segmentation'}


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.1f}'


def _diff(ours: Optional[float], paper: Optional[float]) -> str:
    if ours is None or paper is None:
        return '-'
    return f'{ours - paper:+.1f}'


def gather(paths: List[str]) -> List[Dict[str, Any]]:
    """One row per run: name, task, work dir, summary and paper values."""
    table = load_paper_results()
    rows = []
    for path in paths:
        try:
            report = load_report(path)
        except (OSError, ValueError) as exc:
            raise SystemExit(f'error: cannot read a report from {path}: '
                             f'{exc}') from None
        rows.append(
            dict(config_name=report['config_name'],
                 config=report['config'],
                 task=report['task'],
                 tta=bool(report.get('tta')),
                 work_dir=path if osp.isdir(path) else osp.dirname(path),
                 dataset=report.get('dataset', {}),
                 summary=report['summary'],
                 paper=paper_result(report['config_name'],
                                    tta=bool(report.get('tta')),
                                    table=table)))
    return rows


def _columns(task: str, rows: List[Dict[str, Any]]) -> List[tuple]:
    if task != 'detection':
        return _SEG
    # The mask AP column only when some run has instance masks.
    return [c for c in _DET
            if c[0] != 'segm_mAP' or any(c[0] in r['summary'] for r in rows)]


def _compared(cols: List[tuple]) -> List[tuple]:
    """The columns put beside the paper: the headline (box AP or mIoU),
    and mask AP when the table has it."""
    return [cols[0]] + [c for c in cols[1:] if c[0] == 'segm_mAP']


def _figure_title(path: str) -> str:
    """``detection_curves.png`` -> ``Detection curves``."""
    words = osp.splitext(osp.basename(path))[0].replace('_', ' ')
    return words[:1].upper() + words[1:]


def render_figures(figures: List[str], link_dir: Optional[str] = None
                   ) -> List[str]:
    """Markdown lines showing each PNG under a title."""
    lines = ['## Pictures', '']
    for path in figures:
        link = path
        if link_dir is not None:
            link = osp.relpath(osp.abspath(path), osp.abspath(link_dir))
        title = _figure_title(path)
        lines += [f'### {title}', '', f'![{title}]({link})', '']
    return lines


def render(rows: List[Dict[str, Any]], link_dir: Optional[str] = None,
           figures: Optional[List[str]] = None) -> str:
    """The Markdown report: one table per task present in ``rows``, then
    the ``figures`` (PNG paths), if any.

    Config and figure links are relative to ``link_dir`` (the folder the
    Markdown is written to) when given, else as the runs recorded them.
    """
    lines = ['# Results', '',
             'Values in percent; "Paper" is the published number for the '
             'same config, "Diff" ours minus paper.', '']
    for task, title in TASK_TITLES.items():
        task_rows = [r for r in rows if r['task'] == task]
        if not task_rows:
            continue
        cols = _columns(task, task_rows)
        compared = _compared(cols)
        header = ['Config', 'Data', *[c[1] for c in cols]]
        for _, head in compared:
            header += [f'Paper {head}',
                       'Diff' if len(compared) == 1 else f'Diff {head}']
        lines += [f'## {title}', '', '| ' + ' | '.join(header) + ' |',
                  '|' + '|'.join(['---'] * len(header)) + '|']
        for r in task_rows:
            name = r['config_name'] + (' (TTA)' if r['tta'] else '')
            data = r['dataset'].get('data_root') or '-'
            link = r['config']
            if link_dir is not None:
                link = osp.relpath(osp.abspath(link), osp.abspath(link_dir))
            cells = [f'[{name}]({link})', f'`{data}`',
                     *[_fmt(r['summary'].get(k)) for k, _ in cols]]
            for key, _ in compared:
                paper = (r['paper'] or {}).get(key)
                cells += [_fmt(paper), _diff(r['summary'].get(key), paper)]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    if figures:
        lines += render_figures(figures, link_dir)
    return '\n'.join(lines)


def to_json(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Rows with fraction values; ``detection``/``segmentation`` hold the
    first run of each task."""

    def frac(d: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
        if d is None:
            return None
        return {k: round(v / 100, 4) for k, v in d.items()}

    runs = [dict(r, summary=frac(r['summary']), paper=frac(r['paper']))
            for r in rows]
    out: Dict[str, Any] = dict(units='fraction (0-1)', runs=runs)
    for run in runs:
        if run['task'] not in out:
            out[run['task']] = dict(config=run['config'],
                                    work_dir=run['work_dir'],
                                    **run['summary'])
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Gather metrics.json files of test runs into a '
        'Markdown table beside the paper numbers.')
    parser.add_argument('work_dirs', nargs='+',
                        help='work dirs (or metrics.json files) of '
                        'tools/test.py runs')
    parser.add_argument('--out', help='write the Markdown here')
    parser.add_argument('--json', help='write the rows as JSON here')
    parser.add_argument('--figures', nargs='+', default=[],
                        help='PNG files to show in the Markdown report')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = gather(args.work_dirs)
    for path in args.figures:
        if not osp.isfile(path):
            raise SystemExit(f'error: figure not found: {path}')
    print(render(rows))
    if args.out:
        out_dir = osp.dirname(osp.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(render(rows, link_dir=out_dir, figures=args.figures))
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(to_json(rows), f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
