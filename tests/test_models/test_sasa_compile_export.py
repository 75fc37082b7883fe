"""SASA models under torch.compile and ONNX export.

``mmtwins::sasa_attention`` is one registered op, so dynamo keeps every SASA
model in one graph (eval and training), compiled runs match eager ones
(outputs and gradients), and the ONNX exporter lowers the op through its
registered decomposition: one file with dynamic height and width runs in
onnxruntime at two sizes. The TorchScript exporter refuses with one line.
"""
import copy

import numpy as np
import onnxruntime
import pytest
import torch
from graph_checks import assert_one_graph
from mmengine.registry import DefaultScope
from torch import nn

from mmtwins.models.backbones import SASAResNet
from mmtwins.models.dense_heads import SASARetinaHead
from mmtwins.models.layers import SASAttention
from mmtwins.models.necks import SASAFPN

pytestmark = pytest.mark.usefixtures('single_thread')


def _backbone(stem: str) -> SASAResNet:
    torch.manual_seed(0)
    return SASAResNet(26, stem=stem, base_channels=8, kernel_size=3,
                      num_heads=2, zero_init_residual=False)


class _Detector(nn.Module):
    """Attention-stem SASA-ResNet, SASAFPN and SASARetinaHead in a row."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = _backbone('attention')
        self.neck = SASAFPN([32, 64, 128, 256], 16, 3, start_level=1,
                            add_extra_convs='on_input', kernel_size=3,
                            num_heads=2)
        # The head builds mmdet's box coder: in mmdet's scope, whatever
        # scope an earlier test left current (a segmentation runner: mmseg).
        with DefaultScope.overwrite_default_scope('mmdet'):
            self.head = SASARetinaHead(3, 16, stacked_convs=1,
                                       feat_channels=16, kernel_size=3,
                                       num_heads=2)
        # RetinaNet's N(0, 0.01) init makes near-constant outputs; keep
        # PyTorch's default so that the comparisons see real values.

    def forward(self, x: torch.Tensor) -> tuple:
        scores, boxes = self.head(self.neck(self.backbone(x)))
        return (*scores, *boxes)


MODELS = {
    'resnet-conv-stem': lambda: _backbone('conv'),
    'resnet-attention-stem': lambda: _backbone('attention'),
    'fpn+retina-head': _Detector,
}


def _flat(outputs) -> list:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_no_graph_breaks(name, training):
    model = MODELS[name]()
    model.train(training)  # mmdet's ResNet.train returns None
    assert_one_graph(model, torch.randn(1, 3, 40, 56), training)


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_compiled_matches_eager(name, training):
    """Whole models through dynamo + AOTAutograd (``aot_eager``)."""
    eager = MODELS[name]()
    eager.train(training)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend='aot_eager',
                             fullgraph=True)
    x = torch.randn(1, 3, 40, 56)
    torch._dynamo.reset()
    with torch.set_grad_enabled(training):
        ours, theirs = _flat(compiled(x)), _flat(eager(x))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    if not training:
        return
    weights = [torch.randn_like(out) for out in theirs]
    sum(
        (out * w).sum() for out, w in zip(ours, weights)).backward()
    sum((out * w).sum() for out, w in zip(theirs, weights)).backward()
    for (key, p_ours), p_theirs in zip(compiled_model.named_parameters(),
                                       eager.parameters()):
        if p_theirs.grad is None:
            assert p_ours.grad is None, key
            continue
        assert torch.allclose(p_ours.grad, p_theirs.grad, rtol=1e-4,
                              atol=1e-5), key


def test_inductor_compiles_the_layer():
    """Default ``torch.compile`` (inductor) around the op: fwd and grads."""
    torch.manual_seed(0)
    layer = SASAttention(4, 8, 3, num_heads=2, stride=2)
    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    compiled = torch.compile(copy.deepcopy(layer), fullgraph=True)
    torch._dynamo.reset()
    out, ref = compiled(x), layer(x)
    assert torch.allclose(out, ref, atol=1e-5)
    grad = torch.randn_like(ref)
    ours = torch.autograd.grad(out, x, grad)[0]
    theirs = torch.autograd.grad(ref, x, grad)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def _export(model: nn.Module, path: str, size: tuple) -> None:
    # From 64 up, the last stage is never 1 pixel wide, so no size-1
    # broadcasting guard narrows the range.
    dims = {2: torch.export.Dim('h', min=64, max=2048),
            3: torch.export.Dim('w', min=64, max=2048)}
    torch.onnx.export(model, (torch.randn(1, 3, *size), ), path,
                      dynamo=True, dynamic_shapes=(dims, ), verbose=False)


@pytest.mark.slow  # about 15 s and 45 s of export on a 2-core VM
@pytest.mark.parametrize('name', ['resnet-conv-stem', 'fpn+retina-head'])
def test_onnx_export_dynamic_sizes(name, tmp_path):
    """One exported file, two input sizes (the second has odd sides)."""
    model = MODELS[name]()
    model.eval()
    path = str(tmp_path / 'model.onnx')
    _export(model, path, (96, 64))
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    for size in ((96, 64), (75, 101)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = [t.numpy() for t in _flat(model(x))]
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_torchscript_onnx_exporter_refuses(tmp_path):
    layer = SASAttention(4, 8, 3, num_heads=2).eval()
    with pytest.raises(Exception) as error:
        torch.onnx.export(layer, (torch.randn(1, 4, 8, 8), ),
                          str(tmp_path / 'layer.onnx'), dynamo=False)
    message = str(error.value)
    assert 'TorchScript ONNX exporter' in message
    assert 'dynamo=True' in message
    assert '\n' not in message.strip()
