"""SASA's fused kernel as an onnxruntime custom operator
(:mod:`mmtwins.ops.sasa_ort`): the library builds, the exported node runs
in onnxruntime exactly as the PyTorch op, bad inputs give one error line,
and a whole SASA RetinaNet exported with it (``sasa_kernel=True``) gives
the PyTorch model's predictions, in fp32 and after int8 quantisation."""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from deploy_helpers import REPO, perturb
from mmengine.config import Config
from onnx import TensorProto, helper

import mmtwins  # noqa: F401
from mmtwins.deploy import export_end_to_end
from mmtwins.deploy.parity import check_file
from mmtwins.deploy.quantize import pixel_selections, quantize_int8
from mmtwins.deploy.runtime import create_session, custom_domains
from mmtwins.models.layers import SASAttention
from mmtwins.ops import sasa_ort
from mmtwins.ops.sasa_export import kernel_translations

SASA_DET_CFG = os.path.join(REPO, 'configs', 'quickstart',
                            'retinanet_sasa_r26_attnstem_attnhead_mini_coco.py')
TINY_SASA_DET = """
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.3, nms_pre=200, max_per_img=50))
"""


def _layer_file(layer: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    dim = torch.export.Dim
    with torch.no_grad():
        torch.onnx.export(
            layer, (x, ), path, dynamo=True, input_names=['x'],
            dynamic_shapes={'x': {0: dim('b'), 2: dim('h', min=4),
                                  3: dim('w', min=4)}},
            custom_translation_table=kernel_translations(), verbose=False)
    return path


@pytest.mark.parametrize('kernel_size,heads', [(3, 2), (7, 4)])
def test_operator_matches_the_pytorch_op(tmp_path, kernel_size, heads):
    torch.manual_seed(0)
    layer = SASAttention(8, 16, kernel_size, heads).eval()
    path = _layer_file(layer, torch.randn(2, 8, 11, 13),
                       str(tmp_path / 'layer.onnx'))
    nodes = onnx.load(path).graph.node
    assert [n.op_type for n in nodes if n.domain == 'mmtwins'] == [
        'SASAttention']
    assert custom_domains(path) == ['mmtwins']
    session = create_session(path, num_threads=2)
    # The export size, another size (smaller than the window at 2x5, so
    # that every border case occurs) and batch 3.
    for shape in [(2, 8, 11, 13), (1, 8, 2, 5), (3, 8, 20, 9)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = layer(x).numpy()
        out = session.run(None, {'x': x.numpy()})[0]
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def _node_model(path: str, dtype=TensorProto.FLOAT):
    """One SASAttention node whose inputs have any shape."""
    names = ['query', 'key', 'value', 'rel_h', 'rel_w']
    shapes = [[f'{n}{i}' for i in range(5 if n in names[:3] else 3)]
              for n in names]
    graph = helper.make_graph(
        [helper.make_node('SASAttention', names, ['out', 'lse'],
                          domain='mmtwins')], 'g',
        [helper.make_tensor_value_info(n, dtype, s)
         for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info('out', dtype, None),
         helper.make_tensor_value_info('lse', dtype, None)])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 17), helper.make_opsetid('mmtwins', 1)])
    onnx.save(model, path)
    return path


def test_operator_refuses_bad_inputs_in_one_line(tmp_path):
    path = _node_model(str(tmp_path / 'node.onnx'))
    session = create_session(path)
    q = np.zeros((1, 2, 4, 5, 6), np.float32)
    good = np.zeros((3, 2, 2), np.float32)
    out, lse = session.run(None, dict(query=q, key=q, value=q, rel_h=good,
                                      rel_w=good))
    assert out.shape == (1, 2, 4, 5, 6) and lse.shape == (1, 2, 5, 6)
    # Uniform attention over zeros: the log-sum-exp is log(neighbours).
    assert lse[0, 0, 2, 2] == pytest.approx(np.log(9))
    assert lse[0, 0, 0, 0] == pytest.approx(np.log(4))
    bad = np.zeros((4, 2, 2), np.float32)  # even window
    with pytest.raises(Exception) as info:
        session.run(None, dict(query=q, key=q, value=q, rel_h=bad,
                               rel_w=bad))
    message = str(info.value)
    assert ('SASAttention: rel_h and rel_w must be (k, heads, D / 2) with '
            'k odd (query (1, 2, 4, 5, 6), rel_h (4, 2, 2))') in message
    wrong_key = np.zeros((1, 2, 4, 5, 7), np.float32)
    with pytest.raises(Exception, match=r'key \(1, 2, 4, 5, 7\) and value '
                       r'\(1, 2, 4, 5, 6\) must have the query\'s shape'):
        session.run(None, dict(query=q, key=wrong_key, value=q, rel_h=good,
                               rel_w=good))


def test_library_that_cannot_be_built_is_one_line(tmp_path):
    """No compiler: opening a file that needs the library says why, in one
    line, and how to get a file that does not need it."""
    path = _node_model(str(tmp_path / 'node.onnx'))
    code = ('from mmtwins.deploy.runtime import create_session\n'
            'try:\n'
            f'    create_session({path!r})\n'
            'except Exception as exc:\n'
            '    print(type(exc).__name__, "|", exc)\n')
    env = dict(os.environ, CXX='no-such-compiler',
               TORCH_EXTENSIONS_DIR=str(tmp_path / 'cache'))
    done = subprocess.run([sys.executable, '-c', code], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0] == (
        f'OperatorLibraryError | {path} uses mmtwins\' SASA operator, but '
        'the onnxruntime SASA operator cannot be built: no C++ compiler '
        '(no-such-compiler) on PATH; install one (e.g. g++); export the '
        'model without --sasa-kernel for a file of standard operators only')


def test_library_is_a_verified_cached_build():
    path = sasa_ort.library()
    assert os.path.isfile(path)
    assert os.path.isfile(path[:-3] + '.stamp.json')
    assert sasa_ort.library() == path
    options = ort.SessionOptions()
    sasa_ort.register(options)  # loads in this onnxruntime


@pytest.fixture(scope='module')
def sasa_retinanet(tmp_path_factory):
    from mmengine.registry import MODELS, DefaultScope
    tmp = tmp_path_factory.mktemp('sasa_det')
    cfg_path = str(tmp / 'cfg.py')
    with open(cfg_path, 'w') as f:
        f.write(f'_base_ = {SASA_DET_CFG!r}\n' + TINY_SASA_DET)
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        torch.manual_seed(0)
        model = perturb(MODELS.build(cfg.model))
    path = str(tmp / 'model.onnx')
    export_end_to_end(model, path, (96, 128), config='cfg.py',
                      model_cfg=cfg.model, classes=['a', 'b', 'c'],
                      sasa_kernel=True)
    return model, path


def _runner(path: str):
    session = create_session(path, num_threads=2)
    names = [o.name for o in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(None,
                                                     {'images': batch})))


@pytest.mark.parametrize('batch,size', [(1, (96, 128)), (2, (96, 128)),
                                        (1, (160, 64))])
def test_sasa_retinanet_with_the_operator_matches_pytorch(
        sasa_retinanet, batch, size):
    model, path = sasa_retinanet
    graph = onnx.load(path, load_external_data=False)
    layers = sum(isinstance(m, SASAttention) for m in model.modules())
    # One node per call (the head's layers run on every level) and no
    # one-hot neighbour gathers of the standard-operator form.
    calls = sum(n.op_type == 'SASAttention' for n in graph.graph.node)
    assert calls >= layers > 10
    assert pixel_selections(graph) == []
    torch.manual_seed(batch)
    agree = check_file(model, _runner(path),
                       torch.rand(batch, 3, *size) * 255)
    assert agree.reference > 0
    assert agree.exact, agree
    assert agree.lowest_iou >= 0.99


def test_int8_calibrates_a_file_with_the_operator(sasa_retinanet, tmp_path):
    model, path = sasa_retinanet
    int8 = str(tmp_path / 'int8.onnx')
    rng = np.random.default_rng(0)
    batches = [(rng.random((1, 3, 96, 128)) * 255).astype(np.float32)
               for _ in range(2)]
    counts = quantize_int8(path, int8, batches)
    assert counts['quantized'] > 0 and counts['fp32_selections'] == 0
    nodes = onnx.load(int8).graph.node
    assert any(n.op_type == 'DequantizeLinear' for n in nodes)
    assert any(n.op_type == 'SASAttention' for n in nodes)
    out = _runner(int8)(batches[0])
    assert out['dets'].shape == (1, 50, 5)
