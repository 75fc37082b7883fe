"""tools/infer.py: an image, a folder, a glob and a zoo name through
mmdet's DetInferencer / mmseg's MMSegInferencer with random weights, and
one-line errors for a missing input, a file that is no image and a
checkpoint of another model."""
import json
import os
import os.path as osp

import cv2
import pytest
import torch
from tools_helpers import DET_CFG, REPO, SEG_CFG, load_tool, make_mini

SASA_CFG = osp.join(REPO, 'configs', 'quickstart',
                    'retinanet_sasa_r26_attnstem_attnhead_mini_coco.py')
ZOO_NAME = 'retinanet_twins_pcpvt_s_1x_coco'

infer = load_tool('infer.py')


def random_checkpoint(config: str, path: str) -> str:
    """Save the randomly initialised model of ``config`` (no meta)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    return make_mini(str(tmp_path_factory.mktemp('mini')), 1, 2)


@pytest.fixture(scope='module')
def det_ckpt(tmp_path_factory):
    return random_checkpoint(
        DET_CFG, str(tmp_path_factory.mktemp('ckpt') / 'det.pth'))


def _val_dir(mini):
    return osp.join(mini, 'coco', 'val2017')


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        infer.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    return err


def _check_det_outputs(out_dir, images, classes):
    assert sorted(os.listdir(osp.join(out_dir, 'vis'))) == sorted(
        osp.basename(p) for p in images)
    for path in images:
        drawn = cv2.imread(osp.join(out_dir, 'vis', osp.basename(path)))
        assert drawn.shape == cv2.imread(path).shape
        stem = osp.splitext(osp.basename(path))[0]
        with open(osp.join(out_dir, 'preds', stem + '.json')) as f:
            pred = json.load(f)
        assert pred['image'] == path
        assert len(pred['bboxes']) == len(pred['scores']) == len(
            pred['labels']) == len(pred['classes'])
        assert all(len(b) == 4 for b in pred['bboxes'])
        assert set(pred['classes']) <= set(classes)


def test_folder_and_image(mini, det_ckpt, tmp_path, capsys):
    folder = _val_dir(mini)
    images = sorted(osp.join(folder, f) for f in os.listdir(folder))
    out = str(tmp_path / 'folder')
    infer.main([DET_CFG, det_ckpt, folder, '--out-dir', out,
                '--score-thr', '0', '--device', 'cpu'])
    _check_det_outputs(out, images, ('circle', 'square', 'triangle'))
    assert '2 image(s)' in capsys.readouterr().out
    out = str(tmp_path / 'image')
    infer.main([DET_CFG, det_ckpt, images[1], '--out-dir', out])
    _check_det_outputs(out, images[1:], ('circle', 'square', 'triangle'))
    out = str(tmp_path / 'glob')
    infer.main([DET_CFG, det_ckpt, osp.join(folder, '*1.jpg'), '--out-dir',
                out])
    _check_det_outputs(out, [p for p in images if p.endswith('1.jpg')],
                       ('circle', 'square', 'triangle'))


@pytest.mark.slow  # a full-size model at the paper's test scale
def test_zoo_name(mini, tmp_path):
    from mmdet.datasets import CocoDataset

    from mmtwins.utils.inference import resolve_config
    config = resolve_config(ZOO_NAME)
    assert config == osp.join(REPO, 'configs', 'detection', ZOO_NAME + '.py')
    ckpt = random_checkpoint(config, str(tmp_path / 'zoo.pth'))
    image = sorted(os.listdir(_val_dir(mini)))[0]
    image = osp.join(_val_dir(mini), image)
    out = str(tmp_path / 'out')
    infer.main([ZOO_NAME, ckpt, image, '--out-dir', out])
    _check_det_outputs(out, [image], CocoDataset.METAINFO['classes'])


def test_segmentation(mini, tmp_path):
    ckpt = random_checkpoint(SEG_CFG, str(tmp_path / 'seg.pth'))
    folder = osp.join(mini, 'ade', 'ADEChallengeData2016', 'images',
                      'validation')
    out = str(tmp_path / 'out')
    infer.main([SEG_CFG, ckpt, folder, '--out-dir', out])
    for name in sorted(os.listdir(folder)):
        stem = osp.splitext(name)[0]
        drawn = cv2.imread(osp.join(out, 'vis', name))
        assert drawn.shape == cv2.imread(osp.join(folder, name)).shape
        with open(osp.join(out, 'preds', stem + '.json')) as f:
            pred = json.load(f)
        assert pred['classes'] == ['background', 'circle', 'square',
                                   'triangle']
        assert abs(sum(pred['pixel_share'].values()) - 1) < 1e-4
        assert set(pred['pixel_share']) <= set(pred['classes'])
        label = cv2.imread(pred['label_map'], cv2.IMREAD_UNCHANGED)
        assert label.shape == drawn.shape[:2]


def test_bad_inputs(mini, det_ckpt, tmp_path, capsys):
    folder = _val_dir(mini)
    missing = str(tmp_path / 'nope.jpg')
    err = _error(capsys, [DET_CFG, det_ckpt, missing])
    assert 'nope.jpg' in err
    not_image = tmp_path / 'notes.jpg'
    not_image.write_text('not an image')
    err = _error(capsys, [DET_CFG, det_ckpt, str(not_image)])
    assert 'cannot read' in err and 'notes.jpg' in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'holds no images' in _error(capsys, [DET_CFG, det_ckpt,
                                                str(empty)])
    err = _error(capsys, ['retinanet_twins_pcpvt_s_1x_cooc', det_ckpt,
                          folder])
    assert 'retinanet_twins_pcpvt_s_1x_coco' in err  # the suggestion
    err = _error(capsys, [DET_CFG, str(tmp_path / 'no.pth'), folder])
    assert 'checkpoint not found' in err and 'no.pth' in err
    err = _error(capsys, [DET_CFG, str(not_image), folder])
    assert 'is not a PyTorch checkpoint' in err and 'notes.jpg' in err


def test_checkpoint_of_another_model(mini, det_ckpt, tmp_path, capsys):
    err = _error(capsys, [SASA_CFG, det_ckpt, _val_dir(mini), '--out-dir',
                          str(tmp_path)])
    assert 'is not a checkpoint of' in err and 'missing' in err
    # Same keys, other shapes: a Twins model with 80 classes.
    state = torch.load(det_ckpt)['state_dict']
    state = {k: (torch.zeros(80 * v.shape[0] // 3, *v.shape[1:])
                 if k.startswith('bbox_head.retina_cls') else v)
             for k, v in state.items()}
    other = str(tmp_path / 'coco80.pth')
    torch.save({'state_dict': state}, other)
    err = _error(capsys, [DET_CFG, other, _val_dir(mini)])
    assert 'shape mismatch' in err and 'retina_cls' in err
    assert not osp.exists(osp.join(str(tmp_path), 'vis'))
