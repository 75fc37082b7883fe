"""End-to-end ONNX export of a tiny RetinaNet and a tiny Semantic FPN:
one file with dynamic batch, height and width gives the PyTorch model's own
``predict`` results (same labels, boxes at IoU >= 0.99; the same class
map) at the export size, at two other sizes and for a batch of 2."""
import json

import onnx
import onnxruntime as ort
import pytest
import torch
from deploy_helpers import build, tiny_config
from mmengine.config import Config

from mmtwins.deploy import (
    UnsupportedModel,
    deploy_module,
    export_end_to_end,
    model_fingerprint,
)
from mmtwins.deploy.parity import check_file

EXPORT = (96, 128)
CHECKS = [(1, (96, 128)), (2, (96, 128)), (1, (64, 160)), (2, (160, 96))]


def _export(task, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(task)
    cfg_path = tiny_config(task, str(tmp / 'cfg.py'))
    cfg = Config.fromfile(cfg_path)
    model = build(cfg_path)
    path = str(tmp / 'model.onnx')
    meta = export_end_to_end(model, path, EXPORT, config='cfg.py',
                             model_cfg=cfg.model, classes=['a', 'b', 'c'])
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]

    def run(batch):
        return dict(zip(names, session.run(None, {'images': batch})))

    return model, run, path, meta, cfg


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory):
    return _export('detection', tmp_path_factory)


@pytest.fixture(scope='module')
def segmentor(tmp_path_factory):
    return _export('segmentation', tmp_path_factory)


@pytest.mark.parametrize('batch,size', CHECKS)
def test_retinanet_file_matches_pytorch_predict(retinanet, batch, size):
    model, run, *_ = retinanet
    images = torch.rand(batch, 3, *size) * 255
    agree = check_file(model, run, images)
    assert agree.reference > 0  # the weights give boxes to compare
    assert agree.exact, agree
    assert agree.lowest_iou >= 0.99


def test_retinanet_outputs_and_padding(retinanet):
    model, run, path, meta, cfg = retinanet
    outs = run((torch.rand(2, 3, 128, 96) * 255).numpy())
    dets, labels = outs['dets'], outs['labels']
    k = cfg.model.test_cfg.max_per_img
    assert dets.shape == (2, k, 5) and labels.shape == (2, k)
    assert str(labels.dtype) == 'int64'
    counts = (labels >= 0).sum(1)
    assert counts[0] != counts[1]  # different numbers per image
    for i, n in enumerate(counts):
        assert (labels[i, n:] == -1).all() and (dets[i, n:] == 0).all()
        assert (dets[i, :n, 4] > cfg.model.test_cfg.score_thr).all()
        assert (dets[i, :n, [0, 2]] <= 96).all()
        assert (dets[i, :n, [1, 3]] <= 128).all()
    graph = onnx.load(path, load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    for fn in onnx.load(path, load_external_data=False).functions:
        ops |= {node.op_type for node in fn.node}
    assert 'NonMaxSuppression' in ops
    assert meta['mmtwins.fingerprint'] == model_fingerprint(cfg.model)
    assert json.loads(meta['mmtwins.classes']) == ['a', 'b', 'c']


@pytest.mark.parametrize('batch,size', CHECKS)
def test_segmentor_file_matches_pytorch_predict(segmentor, batch, size):
    model, run, *_ = segmentor
    images = torch.rand(batch, 3, *size) * 255
    agree = check_file(model, run, images)
    assert agree.matched >= 0.999 * agree.reference, agree
    seg = run(images.numpy())['seg']
    assert seg.shape == (batch, *size) and str(seg.dtype) == 'int64'


def test_heads_without_export_are_refused():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnsupportedModel, match='^[^\n]+$'):
        deploy_module(model)
