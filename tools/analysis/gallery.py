#!/usr/bin/env python
"""A gallery of validation images: ground truth beside the predictions.

``python tools/analysis/gallery.py CONFIG CHECKPOINT --out gallery.png``
takes the first ``--num`` images of the config's test set, predicts them
with mmdet's ``DetInferencer`` / mmseg's ``MMSegInferencer`` (through
:func:`mmtwins.utils.inference.build_inferencer`, so the checkpoint must fit
the config), and lets mmdet's ``DetLocalVisualizer`` / mmseg's
``SegLocalVisualizer`` draw each one as a pair: ground truth on the left,
prediction on the right (boxes with class and score above ``--score-thr``,
and their instance masks for a Mask R-CNN config; segmentation masks
overlaid with class names). The pairs are tiled
``--cols`` to a row into one PNG, with ``GAP`` white pixels between them.

Small images are enlarged ``--scale`` times (image bilinear, boxes scaled,
label maps nearest) before drawing, so that the visualizers' labels stay
readable on the 128-pixel mini datasets. The PNG is
``rows * H * scale + (rows - 1) * GAP`` pixels high and
``cols * 2 * W * scale + (cols - 1) * GAP`` wide for H x W images.
"""
import argparse
import copy
import math
import os
import os.path as osp
import sys
from typing import List, Sequence

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.cli.errors import (  # noqa: E402
    ToolError,
    add_debug_flag,
    exit_on_user_error,
)

GAP = 8  # white pixels between gallery cells


def _test_dataset(cfg):
    """The config's test dataset (inside any wrappers), built."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope'))
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    while 'dataset' in ds_cfg:
        ds_cfg = ds_cfg['dataset']
    return DATASETS.build(ds_cfg)


def _polygon_masks(instances: List[dict], height: int, width: int,
                   scale: float) -> np.ndarray:
    """Ground-truth polygons (image pixels) drawn as ``(N, height, width)``
    bool masks of the image enlarged ``scale`` times."""
    import cv2

    masks = np.zeros((len(instances), height, width), np.uint8)
    for mask, inst in zip(masks, instances):
        for poly in inst.get('mask') or []:
            if not isinstance(poly, list):
                raise ToolError(
                    'the gallery draws polygon instance masks only; image '
                    f'annotation {inst.get("bbox")} has an RLE mask: '
                    'convert it to polygons')
            pts = np.asarray(poly, np.float32).reshape(-1, 2) * scale
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return masks.astype(bool)


def _det_pair(visualizer, img: np.ndarray, info: dict, pred, scale: float,
              score_thr: float) -> np.ndarray:
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    instances = [i for i in info.get('instances', [])
                 if not i.get('ignore_flag', 0)]
    gt = InstanceData(
        bboxes=torch.tensor([i['bbox'] for i in instances],
                            dtype=torch.float32).reshape(-1, 4) * scale,
        labels=torch.tensor([i['bbox_label'] for i in instances],
                            dtype=torch.long))
    pred_instances = pred.pred_instances.clone()
    pred_instances.bboxes = pred_instances.bboxes * scale
    if 'masks' in pred_instances:  # an instance segmentation model
        height, width = img.shape[:2]
        gt.masks = _polygon_masks(instances, height, width, scale)
        masks = pred_instances.masks
        if len(masks):
            masks = torch.nn.functional.interpolate(
                masks[:, None].float(), size=(height, width),
                mode='nearest')[:, 0] > 0.5
        else:
            masks = masks.new_zeros((0, height, width))
        pred_instances.masks = masks
    sample = DetDataSample(gt_instances=gt, pred_instances=pred_instances)
    visualizer.add_datasample('gallery', img, sample, draw_gt=True,
                              draw_pred=True, show=False,
                              pred_score_thr=score_thr)
    return visualizer.get_image()


def _seg_pair(visualizer, img: np.ndarray, info: dict, pred, scale: float,
              reduce_zero_label: bool) -> np.ndarray:
    import mmcv
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    label = mmcv.imread(info['seg_map_path'], flag='unchanged',
                        backend='pillow').astype(np.int64)
    if reduce_zero_label:
        label = np.where(label == 0, 255, label - 1)
    for key, value in (info.get('label_map') or {}).items():
        label[label == key] = value
    size = (img.shape[1], img.shape[0])
    gt = mmcv.imresize(label.astype(np.uint8), size,
                       interpolation='nearest')
    pred_map = pred.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    pred_map = mmcv.imresize(pred_map, size, interpolation='nearest')
    sample = SegDataSample(
        gt_sem_seg=PixelData(data=torch.from_numpy(gt[None].astype(
            np.int64))),
        pred_sem_seg=PixelData(data=torch.from_numpy(pred_map[None].astype(
            np.int64))))
    # SegLocalVisualizer keeps only the last drawn half as its image, so
    # the two halves are drawn one at a time and put side by side.
    halves = []
    for gt_half in (True, False):
        visualizer.add_datasample('gallery', img, sample, draw_gt=gt_half,
                                  draw_pred=not gt_half, show=False)
        halves.append(visualizer.get_image())
    return np.concatenate(halves, axis=1)


def tile(cells: Sequence[np.ndarray], cols: int, gap: int = GAP) -> np.ndarray:
    """Tile equally sized RGB cells row by row on a white background."""
    height, width = cells[0].shape[:2]
    rows = math.ceil(len(cells) / cols)
    cols = min(cols, len(cells))
    canvas = np.full((rows * height + (rows - 1) * gap,
                      cols * width + (cols - 1) * gap, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        y, x = r * (height + gap), c * (width + gap)
        canvas[y:y + cell.shape[0], x:x + cell.shape[1]] = cell
    return canvas


def draw_gallery(config: str, checkpoint: str, out: str, num: int = 6,
                 cols: int = 2, scale: float = 3.0, score_thr: float = 0.3,
                 device: str = 'cpu') -> np.ndarray:
    """Write the gallery PNG of ``num`` test images; returns it (RGB)."""
    import mmcv
    from mmengine.config import Config

    from mmtwins.utils.inference import build_inferencer

    cfg = Config.fromfile(config)
    task, inferencer = build_inferencer(cfg, config, checkpoint, device)
    dataset = _test_dataset(cfg)
    infos = [dataset.get_data_info(i) for i in range(min(num, len(dataset)))]
    paths = [info['img_path'] for info in infos]
    inferencer.show_progress = False
    preds = inferencer(paths, return_datasamples=True)
    if isinstance(preds, dict):  # mmdet wraps them, mmseg does not
        preds = preds['predictions']
    if not isinstance(preds, list):  # mmseg: one image, one sample
        preds = [preds]
    visualizer = inferencer.visualizer
    cells: List[np.ndarray] = []
    for info, pred in zip(infos, preds):
        img = mmcv.imread(info['img_path'], channel_order='rgb')
        img = mmcv.imrescale(img, scale, interpolation='bilinear')
        if task == 'detection':
            cells.append(_det_pair(visualizer, img, info, pred, scale,
                                   score_thr))
        else:
            cells.append(_seg_pair(visualizer, img, info, pred, scale,
                                   dataset.reduce_zero_label))
    sizes = {c.shape for c in cells}
    if len(sizes) > 1:  # images of several sizes: pad to the largest
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        cells = [np.pad(c, ((0, h - c.shape[0]), (0, w - c.shape[1]),
                            (0, 0)), constant_values=255) for c in cells]
    gallery = tile(cells, cols)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    if not mmcv.imwrite(np.ascontiguousarray(gallery[..., ::-1]), out):
        raise OSError(f'could not write {out}')
    return gallery


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw ground truth and predictions of the first test '
        'images side by side into one PNG.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    parser.add_argument('--out', default='gallery.png', help='output PNG')
    parser.add_argument('--num', type=int, default=6,
                        help='number of test images (default 6)')
    parser.add_argument('--cols', type=int, default=2,
                        help='ground-truth/prediction pairs per row')
    parser.add_argument('--scale', type=float, default=3.0,
                        help='enlarge the images this much before drawing')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: lowest score drawn')
    parser.add_argument('--device', default='cpu')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.num < 1 or args.cols < 1 or args.scale <= 0:
        parser.error('--num and --cols must be at least 1, --scale > 0')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    with exit_on_user_error(args.debug):
        gallery = draw_gallery(args.config, args.checkpoint, args.out,
                               args.num, args.cols, args.scale,
                               args.score_thr, args.device)
    print(f'saved a {gallery.shape[1]}x{gallery.shape[0]} gallery to '
          f'{args.out}')


if __name__ == '__main__':
    main()
