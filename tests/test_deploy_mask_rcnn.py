"""End-to-end ONNX export of a tiny Twins Mask R-CNN (RPN, RoIAlign, box
head with NMS, mask head in one graph): the file gives the PyTorch model's
own ``predict`` results at the export size, at another size and for a
batch of 2 — the same labels, boxes at IoU >= 0.99 and, pasted into the
image by the runner's code, masks that agree with mmdet's."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from deploy_helpers import build, tiny_mask_rcnn_config
from mmengine.config import Config

from mmtwins.deploy import export_end_to_end
from mmtwins.deploy.masks import masks_for_image
from mmtwins.deploy.parity import box_iou, reference_predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def mask_rcnn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('mask_rcnn')
    cfg_path = tiny_mask_rcnn_config(str(tmp / 'cfg.py'))
    cfg = Config.fromfile(cfg_path)
    model = build(cfg_path)
    path = str(tmp / 'model.onnx')
    meta = export_end_to_end(model, path, (96, 128), config='cfg.py',
                             model_cfg=cfg.model, classes=['a', 'b', 'c'])
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return model, session, meta


@pytest.mark.parametrize('batch,size', [(2, (96, 128)), (1, (160, 96))])
def test_mask_rcnn_file_matches_pytorch_predict(mask_rcnn, batch, size):
    model, session, meta = mask_rcnn
    assert meta['mmtwins.outputs'] == 'dets,labels,masks'
    assert meta['mmtwins.masks'] == 'roi'
    images = torch.rand(batch, 3, *size) * 255
    refs = reference_predict(model, images)
    dets, labels, masks = session.run(None, {'images': images.numpy()})
    assert masks.shape == (batch, 30, 28, 28)
    info = dict(ori_shape=size, scale_factor=(1., 1.))
    compared = 0
    for i, ref in enumerate(refs):
        pred = ref.pred_instances
        keep = labels[i] >= 0
        assert keep.sum() == len(pred.labels) > 0
        iou = box_iou(pred.bboxes.numpy(), dets[i][keep][:, :4])
        pasted = masks_for_image(masks[i][keep], dets[i][keep], 'roi', size,
                                 info).numpy()
        ref_masks = pred.masks.numpy()
        for j in range(len(pred.labels)):
            same = np.where(labels[i][keep] == int(pred.labels[j]))[0]
            k = same[np.argmax(iou[j, same])]
            assert iou[j, k] >= 0.99
            union = (pasted[k] | ref_masks[j]).sum()
            inter = (pasted[k] & ref_masks[j]).sum()
            assert union == 0 or inter / union >= 0.95
            compared += 1
    assert compared > 0


def test_mask_rcnn_file_without_detections(mask_rcnn, tmp_path):
    """A model that finds nothing (score threshold 1: no softmax score
    passes it): the mask head runs on no RoI, every row is padding and
    every mask is zero, in PyTorch and in the file alike."""
    import copy
    model = copy.deepcopy(mask_rcnn[0])
    model.roi_head.test_cfg.score_thr = 1.0
    path = str(tmp_path / 'none.onnx')
    export_end_to_end(model, path, (96, 128), config='cfg.py',
                      model_cfg=model.roi_head.test_cfg,
                      classes=['a', 'b', 'c'])
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    images = torch.rand(2, 3, 96, 128) * 255
    assert all(len(ref.pred_instances) == 0
               for ref in reference_predict(model, images))
    dets, labels, masks = session.run(None, {'images': images.numpy()})
    assert (labels == -1).all() and (dets[..., 4] == 0).all()
    assert masks.shape == (2, 30, 28, 28) and not masks.any()
