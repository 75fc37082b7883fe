#!/usr/bin/env python
"""Plot training curves and time statistics from mmengine's JSON logs.

mmengine's ``LoggerHook`` writes one JSON line per logged training step
(``loss``, ``loss_*``, ``lr``, ``time``, ...) and one per validation
(``coco/bbox_mAP``, ``mIoU``, ...) to
``<work_dir>/<timestamp>/vis_data/<timestamp>.json``. Give this tool such a
file or a work dir (its latest run is used).

Examples::

    # loss and the validation metric of one or more runs, into a PNG
    python tools/analysis/analyze_logs.py plot_curve work_dirs/x \
        --out curves.png
    python tools/analysis/analyze_logs.py plot_curve a.json b.json \
        --keys loss coco/bbox_mAP --legend run-a run-b --out cmp.png
    # average seconds per iteration, slowest and fastest epoch
    python tools/analysis/analyze_logs.py cal_train_time work_dirs/x
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List

VAL_KEYS = ('coco/bbox_mAP', 'coco/segm_mAP', 'mIoU')


def find_json_log(path: str) -> str:
    """``path`` itself, or the newest ``vis_data/<ts>.json`` in a work dir."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise SystemExit(f'error: no such log file or work dir: {path}')
    logs = [
        p for p in glob.glob(osp.join(path, '*', 'vis_data', '*.json'))
        if osp.basename(p) != 'scalars.json'
    ]
    if not logs:
        raise SystemExit(f'error: no mmengine JSON log under {path} '
                         '(expected <timestamp>/vis_data/<timestamp>.json)')
    return max(logs, key=lambda p: osp.basename(osp.dirname(
        osp.dirname(p))))


def load_log(path: str) -> Dict[str, List[dict]]:
    """Split a JSON log into ``train`` and ``val`` entries."""
    out: Dict[str, List[dict]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            out['train' if 'lr' in entry else 'val'].append(entry)
    return out


def default_keys(logs: List[Dict[str, List[dict]]]) -> List[str]:
    """``loss`` plus the validation metrics that the logs hold."""
    keys = ['loss']
    for key in VAL_KEYS:
        if any(key in e for log in logs for e in log['val']):
            keys.append(key)
    return keys


def plot_curve(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    paths = [find_json_log(p) for p in args.logs]
    logs = [load_log(p) for p in paths]
    keys = args.keys or default_keys(logs)
    legend = args.legend or [osp.basename(osp.dirname(osp.dirname(
        osp.dirname(p)))) or p for p in paths]
    if len(legend) != len(paths):
        raise SystemExit(f'error: {len(legend)} legend entries for '
                         f'{len(paths)} logs')
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        plotted = False
        for log, name in zip(logs, legend):
            split = 'train' if any(key in e for e in log['train']) else 'val'
            points = [(e['step'], e[key]) for e in log[split] if key in e]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker='o' if split == 'val' else None,
                    markersize=3, label=name)
            epoch_based = any('epoch' in e for e in log['train'])
            ax.set_xlabel('epoch' if split == 'val' and epoch_based else
                          'iteration')
            plotted = True
        if not plotted:
            raise SystemExit(f'error: no log has the key {key!r}')
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f'saved {", ".join(keys)} curves of {len(paths)} log(s) to '
          f'{args.out}')


def cal_train_time(args: argparse.Namespace) -> None:
    for path in (find_json_log(p) for p in args.logs):
        train = load_log(path)['train']
        times = [e['time'] for e in train if 'time' in e]
        if not times:
            print(f'{path}: no timed training iterations')
            continue
        print(f'-----Analyze train time of {path}-----')
        per_epoch: Dict[int, List[float]] = defaultdict(list)
        for e in train:
            if 'time' in e and 'epoch' in e:
                per_epoch[e['epoch']].append(e['time'])
        if per_epoch:
            means = {k: sum(v) / len(v) for k, v in per_epoch.items()}
            slow = max(means, key=means.get)
            fast = min(means, key=means.get)
            print(f'slowest epoch {slow}, average time is '
                  f'{means[slow]:.4f} s/iter')
            print(f'fastest epoch {fast}, average time is '
                  f'{means[fast]:.4f} s/iter')
        print(f'average iter time: {sum(times) / len(times):.4f} s/iter')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyze training logs.')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot curves to a PNG')
    plot.add_argument('logs', nargs='+',
                      help='JSON logs or work dirs (latest run)')
    plot.add_argument('--keys', nargs='+',
                      help='keys to plot (default: loss and the '
                      'validation mAP / mIoU found in the logs)')
    plot.add_argument('--legend', nargs='+', help='one name per log')
    plot.add_argument('--title', help='figure title')
    plot.add_argument('--out', default='curves.png', help='output PNG')
    timing = sub.add_parser('cal_train_time',
                            help='average seconds per iteration')
    timing.add_argument('logs', nargs='+',
                        help='JSON logs or work dirs (latest run)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    {'plot_curve': plot_curve, 'cal_train_time': cal_train_time}[args.task](
        args)


if __name__ == '__main__':
    sys.exit(main())
