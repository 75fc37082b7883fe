"""The NMS custom op (``torch.ops.mmtwins.nms_keep``) and
:func:`mmtwins.deploy.nms.multiclass_nms`: schema and fake-tensor checks,
and agreement with mmcv's ``batched_nms`` in eager mode and through the
ONNX file (ONNX ``NonMaxSuppression`` in onnxruntime)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from mmcv.ops import batched_nms
from torch.export import Dim

from mmtwins.deploy.nms import ONNX_TRANSLATIONS, multiclass_nms, nms_keep

IOU = 0.5
SCORE_THR = 0.05


def random_boxes(n, m, size=100., seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, m, 2, generator=g) * size
    wh = torch.rand(n, m, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], -1)


class Multiclass(torch.nn.Module):
    """Boxes, scores, labels -> padded detections (one graph)."""

    def __init__(self, max_num):
        super().__init__()
        self.max_num = max_num

    def forward(self, boxes, scores, labels):
        return multiclass_nms(boxes, scores, labels, scores > SCORE_THR,
                              IOU, self.max_num)


def reference(boxes, scores, labels, max_num):
    """mmcv's batched_nms per image on the boxes above the threshold."""
    out = []
    for b, s, lab in zip(boxes, scores, labels):
        valid = s > SCORE_THR
        if not valid.any():
            out.append((np.zeros((0, 5)), np.zeros(0, dtype=np.int64)))
            continue
        dets, keep = batched_nms(b[valid], s[valid], lab[valid],
                                 dict(type='nms', iou_threshold=IOU))
        out.append((dets[:max_num].numpy(),
                    lab[valid][keep][:max_num].numpy()))
    return out


def as_rows(dets, labels):
    """Detections as a sorted list of (score, label, box) rows."""
    rows = [(round(float(d[4]), 6), int(lab), *np.round(d[:4], 4))
            for d, lab in zip(dets, labels)]
    return sorted(rows, reverse=True)


def check(dets, labels, ref, max_num):
    dets, labels = np.asarray(dets), np.asarray(labels)
    assert dets.shape[1:] == (max_num, 5) and labels.shape[1] == max_num
    for i, (rdets, rlabels) in enumerate(ref):
        found = labels[i] >= 0
        n = int(found.sum())
        assert n == len(rdets), i
        assert found[:n].all() and not found[n:].any()  # padding at the end
        assert (dets[i][~found] == 0).all()
        assert np.all(np.diff(dets[i][:n, 4]) <= 0)  # best first
        assert as_rows(dets[i][:n], labels[i][:n]) == as_rows(rdets,
                                                             rlabels)


CASES = {
    # name: (boxes, scores, labels, K)
    'random': lambda: (random_boxes(2, 300), torch.rand(2, 300),
                       torch.randint(0, 4, (2, 300)), 100),
    'one class': lambda: (random_boxes(2, 200, seed=1), torch.rand(2, 200),
                          torch.zeros(2, 200, dtype=torch.long), 50),
    'none above the threshold': lambda: (
        random_boxes(2, 40), torch.rand(2, 40) * SCORE_THR,
        torch.randint(0, 3, (2, 40)), 20),
    'K larger than the candidates': lambda: (
        random_boxes(2, 12, size=400.), torch.rand(2, 12),
        torch.randint(0, 2, (2, 12)), 30),
    # equal scores: every box twice with its score (exact duplicates) and
    # the same scores again in another class; which of two equal
    # candidates is kept cannot change the output
    'ties': lambda: (random_boxes(2, 60, seed=3).repeat(1, 3, 1),
                     torch.rand(2, 60).repeat(1, 3),
                     torch.cat([torch.zeros(2, 120, dtype=torch.long),
                                torch.ones(2, 60, dtype=torch.long)], 1),
                     40),
}


def test_opcheck():
    boxes, scores = random_boxes(2, 50), torch.rand(2, 50)
    torch.library.opcheck(nms_keep, (boxes, scores, IOU, SCORE_THR))
    torch.library.opcheck(nms_keep, (boxes[:, :0], scores[:, :0], IOU, 0.))


@pytest.mark.parametrize('case', list(CASES))
def test_eager_matches_mmcv_batched_nms(case):
    boxes, scores, labels, k = CASES[case]()
    dets, out_labels = Multiclass(k)(boxes, scores, labels)
    check(dets.numpy(), out_labels.numpy(),
          reference(boxes, scores, labels, k), k)


@pytest.fixture(scope='module')
def onnx_sessions(tmp_path_factory):
    """One dynamic-shape file per K."""
    sessions = {}
    for k in sorted({CASES[c]()[3] for c in CASES}):
        path = str(tmp_path_factory.mktemp('nms') / f'nms{k}.onnx')
        boxes, scores, labels, _ = CASES['random']()
        num = Dim('num', min=2, max=100000)
        torch.onnx.export(
            Multiclass(k).eval(), (boxes, scores, labels), path,
            dynamo=True,
            dynamic_shapes=({1: num}, {1: num}, {1: num}),
            custom_translation_table=ONNX_TRANSLATIONS)
        sessions[k] = ort.InferenceSession(
            path, providers=['CPUExecutionProvider'])
    return sessions


@pytest.mark.parametrize('case', list(CASES))
def test_onnx_matches_mmcv_batched_nms(case, onnx_sessions):
    boxes, scores, labels, k = CASES[case]()
    session = onnx_sessions[k]
    names = [i.name for i in session.get_inputs()]
    dets, out_labels = session.run(None, dict(zip(
        names, [boxes.numpy(), scores.numpy(), labels.numpy()])))
    check(dets, out_labels, reference(boxes, scores, labels, k), k)
