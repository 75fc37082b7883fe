"""Write the two small built-in datasets used by the quickstart and tests.

``python tools/dataset_converters/make_mini_datasets.py OUT_DIR`` writes

* ``OUT_DIR/coco``: a COCO-2017-style instance set
  (``annotations/instances_{train,val}2017.json`` with polygon masks,
  ``train2017/*.jpg``, ``val2017/*.jpg``);
* ``OUT_DIR/ade/ADEChallengeData2016``: an ADE20K-style semantic set
  (``images/{training,validation}/*.jpg``,
  ``annotations/{training,validation}/*.png``, where 0 means "ignore" as in
  ADEChallengeData2016).

Every image is a textured background with a few large, high-contrast
shapes (circle, square, triangle). The pictures are drawn from a seeded
random generator per image, so the same arguments give the same files on
every machine; the shapes are big and their colours lean towards one hue
per class, so a Twins model learns them from scratch on a CPU in minutes.
Only numpy and OpenCV are needed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
# ADE-style label values: 0 = ignore, 1 = background, 2.. = the shapes.
SEG_CLASSES = ('background', *CLASSES)
# Base hue per class (OpenCV hue range 0-179): red, green, blue.
_HUES = (0, 60, 115)
_JPEG_QUALITY = 95


@dataclass
class Shape:
    """One drawn object: its class index (0-based) and outline polygon."""

    label: int
    polygon: np.ndarray  # (N, 2) float32, x/y in pixels


def _texture(rng: np.random.RandomState, size: int) -> np.ndarray:
    """A low-saturation background: smooth noise plus faint stripes."""
    coarse = rng.uniform(0, 1, (6, 6, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(70, 170, 3).astype(np.float32)
    grey = base.mean()
    base = grey + 0.3 * (base - grey)  # keep the background desaturated
    img = base + 50 * (smooth - 0.5)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 16)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) *
                     (2 * math.pi / period))
    img += 12 * stripes[..., None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_colour(rng: np.random.RandomState, label: int) -> Tuple[int, ...]:
    """A saturated BGR colour whose hue leans towards the class hue."""
    hue = (_HUES[label] + rng.randint(-12, 13)) % 180
    hsv = np.uint8([[[hue, rng.randint(170, 256), rng.randint(150, 256)]]])
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in bgr)


def _outline(rng: np.random.RandomState, label: int, cx: float, cy: float,
             radius: float) -> np.ndarray:
    """Polygon of a circle (32 vertices), square or triangle."""
    theta0 = rng.uniform(0, 2 * math.pi)
    corners = {0: 32, 1: 4, 2: 3}[label]
    angles = theta0 + np.arange(corners) * (2 * math.pi / corners)
    pts = np.stack([cx + radius * np.cos(angles),
                    cy + radius * np.sin(angles)], axis=1)
    return pts.astype(np.float32)


def render_scene(rng: np.random.RandomState, size: int,
                 max_shapes: int = 3) -> Tuple[np.ndarray, List[Shape]]:
    """Draw one picture; shapes never overlap, so every outline is exact."""
    img = _texture(rng, size)
    shapes: List[Shape] = []
    placed: List[Tuple[float, float, float]] = []
    wanted = rng.randint(1, max_shapes + 1)
    for _ in range(50 * wanted):
        if len(shapes) == wanted:
            break
        radius = rng.uniform(0.12, 0.26) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        if any(math.hypot(cx - x, cy - y) < radius + r + 4
               for x, y, r in placed):
            continue
        label = rng.randint(len(CLASSES))
        poly = _outline(rng, label, cx, cy, radius)
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)],
                     _shape_colour(rng, label), lineType=cv2.LINE_8)
        placed.append((cx, cy, radius))
        shapes.append(Shape(label, poly))
    noise = rng.normal(0, 5, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, shapes


def _mask(poly: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1,
                 lineType=cv2.LINE_8)
    return mask


def semantic_label(shapes: Sequence[Shape], size: int) -> np.ndarray:
    """ADE-style label map: 1 = background, 2.. = shapes, 0 = a thin
    unlabelled ring along every outline (like ADE's unlabelled pixels)."""
    label = np.ones((size, size), np.uint8)
    ring = np.zeros((size, size), np.uint8)
    for shape in shapes:
        pts = [np.round(shape.polygon).astype(np.int32)]
        cv2.fillPoly(label, pts, shape.label + 2, lineType=cv2.LINE_8)
        cv2.polylines(ring, pts, True, 1, thickness=1, lineType=cv2.LINE_8)
    label[ring > 0] = 0
    return label


def _write_jpg(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise OSError(f'could not write {path}')


def make_coco(out_dir: str, num_train: int, num_val: int, size: int,
              seed: int) -> Dict[str, int]:
    """Write the COCO-style set; returns the image count per split."""
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    counts = {}
    for split, num, offset in (('train', num_train, 0),
                               ('val', num_val, 1_000_000)):
        img_dir = osp.join(out_dir, f'{split}2017')
        os.makedirs(img_dir, exist_ok=True)
        images, anns = [], []
        for idx in range(num):
            rng = np.random.RandomState(seed + offset + idx)
            img, shapes = render_scene(rng, size)
            image_id = idx + 1
            name = f'{image_id:012d}.jpg'
            _write_jpg(osp.join(img_dir, name), img)
            images.append(dict(id=image_id, file_name=name, height=size,
                               width=size))
            for shape in shapes:
                mask = _mask(shape.polygon, size)
                ys, xs = np.nonzero(mask)
                x0, y0 = int(xs.min()), int(ys.min())
                bbox = [x0, y0, int(xs.max()) - x0 + 1,
                        int(ys.max()) - y0 + 1]
                anns.append(dict(
                    id=len(anns) + 1, image_id=image_id,
                    category_id=shape.label + 1, iscrowd=0,
                    area=float(mask.sum()), bbox=[float(v) for v in bbox],
                    segmentation=[[round(float(v), 2)
                                   for v in shape.polygon.reshape(-1)]]))
        coco = dict(
            info=dict(description='mmtwins mini COCO-style shapes',
                      version='1.0', year=2024),
            licenses=[], images=images, annotations=anns,
            categories=categories)
        with open(osp.join(out_dir, 'annotations',
                           f'instances_{split}2017.json'), 'w') as f:
            json.dump(coco, f)
        counts[split] = num
    return counts


def make_ade(out_dir: str, num_train: int, num_val: int, size: int,
             seed: int) -> Dict[str, int]:
    """Write the ADE20K-style set; returns the image count per split."""
    counts = {}
    for split, num, offset in (('training', num_train, 2_000_000),
                               ('validation', num_val, 3_000_000)):
        img_dir = osp.join(out_dir, 'images', split)
        ann_dir = osp.join(out_dir, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        tag = 'train' if split == 'training' else 'val'
        for idx in range(num):
            rng = np.random.RandomState(seed + offset + idx)
            img, shapes = render_scene(rng, size)
            stem = f'ADE_{tag}_{idx + 1:08d}'
            _write_jpg(osp.join(img_dir, stem + '.jpg'), img)
            if not cv2.imwrite(osp.join(ann_dir, stem + '.png'),
                               semantic_label(shapes, size)):
                raise OSError(f'could not write {stem}.png in {ann_dir}')
        counts[split] = num
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the mini COCO-style and ADE20K-style datasets.')
    parser.add_argument('out_dir', help='output folder, e.g. data/mini')
    parser.add_argument('--size', type=int, default=128,
                        help='square image side in pixels')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', choices=['coco', 'ade'],
                        help='write just one of the two sets')
    args = parser.parse_args(argv)
    if args.size < 48:
        parser.error(f'--size must be at least 48, got {args.size}')
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1')
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    common = (args.num_train, args.num_val, args.size, args.seed)
    if args.only in (None, 'coco'):
        out = osp.join(args.out_dir, 'coco')
        counts = make_coco(out, *common)
        print(f'COCO-style set in {out}: {counts}')
    if args.only in (None, 'ade'):
        out = osp.join(args.out_dir, 'ade', 'ADEChallengeData2016')
        counts = make_ade(out, *common)
        print(f'ADE20K-style set in {out}: {counts}')


if __name__ == '__main__':
    sys.exit(main())
