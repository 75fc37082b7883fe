"""mmtwins.deploy.quantize: which nodes stay fp32 in the int8 file, and a
static quantisation of a small graph that keeps them fp32."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mmtwins.deploy.quantize import (
    activation_products,
    describe,
    pixel_selections,
    quantize_int8,
)


def _graph(path: str) -> onnx.ModelProto:
    """images -> one-hot 3x3 gather conv (9 neighbours) and a learned 3x3
    conv -> their product through MatMul with a weight and MatMul of two
    activations."""
    rng = np.random.default_rng(0)
    eye = np.eye(9, dtype=np.float32).reshape(9, 1, 3, 3)
    learned = rng.standard_normal((9, 1, 3, 3)).astype(np.float32)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node('Conv', ['images', 'eye'], ['gathered'],
                         name='gather', pads=[1, 1, 1, 1]),
        helper.make_node('Conv', ['images', 'learned'], ['features'],
                         name='conv', pads=[1, 1, 1, 1]),
        helper.make_node('MatMul', ['features', 'weight'], ['projected'],
                         name='linear'),
        helper.make_node('Transpose', ['gathered'], ['gathered_t'],
                         perm=[0, 1, 3, 2]),
        helper.make_node('MatMul', ['projected', 'gathered_t'], ['out'],
                         name='product'),
    ]
    graph = helper.make_graph(
        nodes, 'g',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT,
                                       [1, 1, 4, 4])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT,
                                       [1, 9, 4, 4])],
        [numpy_helper.from_array(eye, 'eye'),
         numpy_helper.from_array(learned, 'learned'),
         numpy_helper.from_array(weight, 'weight')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('',
                                                                        17)])
    onnx.save(model, path)
    return model


def test_fp32_nodes_are_found(tmp_path):
    model = _graph(str(tmp_path / 'g.onnx'))
    assert pixel_selections(model) == ['gather']
    assert activation_products(model) == ['product']


def test_quantised_file_keeps_copies_and_products_fp32(tmp_path):
    fp32, int8 = str(tmp_path / 'g.onnx'), str(tmp_path / 'g_int8.onnx')
    _graph(fp32)
    rng = np.random.default_rng(1)
    batches = [rng.random((1, 1, 4, 4)).astype(np.float32) * 255
               for _ in range(4)]
    counts = quantize_int8(fp32, int8, batches)
    assert counts == dict(quantized=2, fp32_products=1, fp32_selections=1)
    assert describe(counts) == ('2 Conv/Gemm/MatMul nodes in int8; 1 '
                                'activation products and 1 one-hot pixel '
                                'copies in fp32')
    graph = onnx.load(int8).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    # the learned conv and the linear layer read dequantised int8 weights
    assert producer[by_name['conv'].input[1]] == 'DequantizeLinear'
    assert producer[by_name['linear'].input[1]] == 'DequantizeLinear'
    # the gather runs in fp32: its one-hot filters are not quantised and
    # its output is not quantised again
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    assert by_name['gather'].input[1] == 'eye'
    assert 'QuantizeLinear' not in consumers[by_name['gather'].output[0]]
    # the product of two activations is no int8 product: its second
    # operand is not quantised, so onnxruntime cannot make it QLinearMatMul
    assert producer[by_name['product'].input[1]] == 'Transpose'
    x = batches[0]
    ref = ort.InferenceSession(fp32).run(None, {'images': x})[0]
    got = ort.InferenceSession(int8).run(None, {'images': x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
