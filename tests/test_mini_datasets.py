"""The built-in mini datasets: standard layouts, consistent labels, and the
same bytes every time."""
import hashlib
import importlib.util
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(REPO, 'tools', 'dataset_converters',
                  'make_mini_datasets.py')


def _load_tool():
    spec = importlib.util.spec_from_file_location('make_mini_datasets',
                                                  SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mini = _load_tool()


@pytest.fixture(scope='module')
def mini_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('mini')
    mini.main([str(out), '--num-train', '4', '--num-val', '3', '--size',
               '96'])
    return str(out)


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = osp.join(dirpath, name)
            h.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def test_coco_layout_and_annotations(mini_dir):
    root = osp.join(mini_dir, 'coco')
    for split, num in (('train', 4), ('val', 3)):
        with open(osp.join(root, 'annotations',
                           f'instances_{split}2017.json')) as f:
            coco = json.load(f)
        assert [c['name'] for c in coco['categories']] == list(mini.CLASSES)
        assert len(coco['images']) == num
        files = sorted(os.listdir(osp.join(root, f'{split}2017')))
        assert files == sorted(i['file_name'] for i in coco['images'])
        ids = {i['id'] for i in coco['images']}
        assert coco['annotations'], 'every split has objects'
        for ann in coco['annotations']:
            assert ann['image_id'] in ids and ann['iscrowd'] == 0
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= 96 and y + h <= 96
            poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
            # The polygon lies in its box (up to rounding to pixels).
            assert poly[:, 0].min() >= x - 1 and poly[:, 0].max() <= x + w
            assert poly[:, 1].min() >= y - 1 and poly[:, 1].max() <= y + h
            assert 0 < ann['area'] <= w * h
        img = cv2.imread(osp.join(root, f'{split}2017', files[0]))
        assert img.shape == (96, 96, 3)


def test_coco_loads_with_pycocotools(mini_dir):
    from pycocotools import coco as coco_api
    coco = coco_api.COCO(
        osp.join(mini_dir, 'coco', 'annotations', 'instances_val2017.json'))
    ann = coco.loadAnns(coco.getAnnIds())[0]
    mask = coco.annToMask(ann)
    assert mask.sum() == pytest.approx(ann['area'], rel=0.2)


def test_ade_layout_and_labels(mini_dir):
    root = osp.join(mini_dir, 'ade', 'ADEChallengeData2016')
    for split, num in (('training', 4), ('validation', 3)):
        imgs = sorted(os.listdir(osp.join(root, 'images', split)))
        anns = sorted(os.listdir(osp.join(root, 'annotations', split)))
        assert len(imgs) == num
        assert [osp.splitext(n)[0] for n in imgs] == \
            [osp.splitext(n)[0] for n in anns]
        assert all(n.endswith('.jpg') for n in imgs)
        for name in anns:
            label = cv2.imread(osp.join(root, 'annotations', split, name),
                               cv2.IMREAD_UNCHANGED)
            assert label.shape == (96, 96) and label.dtype == np.uint8
            values = set(np.unique(label).tolist())
            # 0 = ignore (outline ring), 1 = background, 2..4 = shapes.
            assert values <= set(range(len(mini.SEG_CLASSES) + 1))
            assert {0, 1} <= values and values & {2, 3, 4}


def test_same_arguments_same_files(mini_dir, tmp_path):
    mini.main([str(tmp_path), '--num-train', '4', '--num-val', '3', '--size',
               '96'])
    assert _digest(str(tmp_path)) == _digest(mini_dir)


def test_semantic_label_matches_instances():
    rng = np.random.RandomState(7)
    _, shapes = mini.render_scene(rng, 128)
    label = mini.semantic_label(shapes, 128)
    for shape in shapes:
        mask = mini._mask(shape.polygon, 128).astype(bool)
        inside = label[mask]
        # Apart from the ignore ring, the shape's pixels carry its class.
        assert np.all((inside == shape.label + 2) | (inside == 0))


def test_bad_arguments():
    with pytest.raises(SystemExit):
        mini.parse_args(['out', '--size', '16'])
    with pytest.raises(SystemExit):
        mini.parse_args(['out', '--num-val', '0'])
