#!/usr/bin/env python
"""Run a detector or segmentor on images and save pictures and predictions.

``python tools/infer.py CONFIG_OR_ZOO_NAME CHECKPOINT INPUT`` runs mmdet's
``DetInferencer`` (detection configs) or mmseg's ``MMSegInferencer``
(segmentation configs) on INPUT, which is an image, a folder of images or a
quoted glob, with a progress bar. Per image it writes, under ``--out-dir``:

* ``vis/<image name>``: the image with the predictions drawn (boxes with
  class and score above ``--score-thr``; segmentation masks overlaid);
* ``preds/<image stem>.json``: the predictions. Detection: mmdet's
  ``bboxes`` (x1, y1, x2, y2 in input pixels), ``labels``, ``scores``
  plus the ``classes`` names of the labels; segmentation: the pixel share
  of each predicted class and ``pred/<stem>_pred.png``, the label map.

CONFIG_OR_ZOO_NAME is a config file or a model-zoo name, i.e. a config's
stem in ``configs/*/metafile.yml`` (``retinanet_twins_pcpvt_s_1x_coco``).
The checkpoint must belong to that config: other models' checkpoints are
refused, not loaded partly (and so are checkpoints with NaN/inf weights).

A file in a folder or glob that does not decode as an image is named on
one ``error:`` line and skipped; the other images are processed, and the
tool then exits with status 1 and a last line with the count. Pictures
larger than ``--max-vis-size`` pixels (longer side, default 2000) are drawn
downscaled, which bounds the drawing memory of very large photos; the
predictions stay in input pixels.

Examples::

    python tools/infer.py \
        configs/quickstart/retinanet_twins_pcpvt_s_mini_coco.py \
        work_dirs/quickstart/detection/epoch_5.pth data/mini/coco/val2017 \
        --out-dir work_dirs/infer
    python tools/infer.py retinanet_twins_pcpvt_s_1x_coco ckpt.pth 'imgs/*.jpg'
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a clone without installing

import tools.cli  # noqa: E402,F401  (quiet start: no third-party warnings)
from tools.cli.errors import add_debug_flag, exit_on_user_error  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the predictions of a detector or segmentor on '
        'images and save them with a JSON of predictions per image.')
    parser.add_argument('model',
                        help='config file or model-zoo name (config stem)')
    parser.add_argument('checkpoint', help='checkpoint of that config, or '
                        'an end-to-end .onnx file exported from it')
    parser.add_argument('input',
                        help='an image, a folder of images or a glob')
    parser.add_argument('--out-dir', default='outputs',
                        help='where vis/ and preds/ go (default: outputs)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: lowest score drawn (default 0.3; '
                        'the JSON keeps every box the model returns)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:1, ... (default: cuda if '
                        'available, else cpu)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per forward pass')
    parser.add_argument('--max-vis-size', type=int, default=2000,
                        help='longest side of the drawn pictures in pixels; '
                        'larger images are drawn downscaled (default 2000)')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.batch_size < 1:
        parser.error('--batch-size must be at least 1')
    if args.max_vis_size < 16:
        parser.error('--max-vis-size must be at least 16')
    return args


def _save_seg(path: str, labels, classes: List[str],
              out_dir: str) -> Dict[str, Any]:
    """Save one label map as ``pred/<stem>_pred.png`` and return its JSON
    record: the pixel share of each predicted class."""
    import mmcv
    import numpy as np
    labels = np.asarray(labels)
    stem = osp.splitext(osp.basename(path))[0]
    label_map = osp.join(out_dir, 'pred', f'{stem}_pred.png')
    if not mmcv.imwrite(labels.astype(np.uint8), label_map):
        raise OSError(f'could not write {label_map}')
    values, counts = np.unique(labels, return_counts=True)
    return dict(
        image=path,
        label_map=label_map,
        classes=list(classes),
        pixel_share={classes[int(v)] if int(v) < len(classes) else int(v):
                     round(float(c) / labels.size, 6)
                     for v, c in zip(values, counts)})


def run(args: argparse.Namespace) -> List[str]:
    """Run the inferencer; returns the written JSON paths. Files that do
    not decode are named on stderr and skipped (:func:`main` counts
    them)."""
    from mmengine.config import Config

    from mmtwins.utils.inference import (
        build_inferencer,
        collect_images,
        resolve_config,
    )

    config = resolve_config(args.model)
    images, unreadable = collect_images(args.input)
    for path, reason in unreadable:
        print(f'error: cannot read {path} as an image ({reason}); skipped',
              file=sys.stderr)
    args.unreadable = unreadable
    if not images:
        return []
    cfg = Config.fromfile(config)
    if args.checkpoint.lower().endswith('.onnx'):  # run with onnxruntime
        from mmtwins.deploy.inferencer import build_onnx_inferencer
        build_inferencer = build_onnx_inferencer  # noqa: F811
    task, inferencer = build_inferencer(cfg, config, args.checkpoint,
                                        args.device, args.max_vis_size)
    classes = list(inferencer.model.dataset_meta['classes'])
    os.makedirs(osp.join(args.out_dir, 'preds'), exist_ok=True)
    written = []
    if task == 'detection':
        results = inferencer(images, batch_size=args.batch_size,
                             out_dir=args.out_dir, no_save_pred=False,
                             pred_score_thr=args.score_thr)
        for path in images:  # add the class names to mmdet's JSON
            stem = osp.splitext(osp.basename(path))[0]
            out = osp.join(args.out_dir, 'preds', stem + '.json')
            with open(out) as f:
                pred = json.load(f)
            pred = dict(image=path,
                        classes=[classes[i] for i in pred['labels']], **pred)
            with open(out, 'w') as f:
                json.dump(pred, f)
            written.append(out)
    else:
        # mmseg names its saved files by a counter; the drawn pictures and
        # label maps it returns are saved here under the image names.
        import mmcv
        results = inferencer(images, batch_size=args.batch_size,
                             return_vis=True)
        preds, vis = results['predictions'], results['visualization']
        if len(images) == 1:
            preds, vis = [preds], [vis]
        for path, labels, drawn in zip(images, preds, vis):
            name = osp.basename(path)
            mmcv.imwrite(drawn[..., ::-1], osp.join(args.out_dir, 'vis',
                                                    name))
            out = osp.join(args.out_dir, 'preds',
                           osp.splitext(name)[0] + '.json')
            with open(out, 'w') as f:
                json.dump(_save_seg(path, labels, classes, args.out_dir), f)
            written.append(out)
    print(f'{len(images)} image(s): pictures in '
          f'{osp.join(args.out_dir, "vis")}, predictions in '
          f'{osp.join(args.out_dir, "preds")}')
    return written


def main(argv=None) -> None:
    args = parse_args(argv)
    # Bad input (mmtwins.errors.InputError) ends in one `error:` line.
    with exit_on_user_error(args.debug):
        written = run(args)
    bad = len(args.unreadable)
    if bad:
        print(f'error: {bad} of {bad + len(written)} files could not be '
              f'read as images (named above); the other {len(written)} '
              'were processed', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
