"""Static int8 quantisation of an end-to-end ONNX file with onnxruntime.

:func:`quantize_int8` writes a QDQ file (``onnxruntime.quantization``,
uint8 activations, per-channel int8 weights) calibrated on pixel batches
such as :func:`calibration_batches` gives. What is quantised:

- every ``Conv`` and ``Gemm``, and every ``MatMul`` whose second operand is
  a weight (the linear layers), except convolutions with one-hot filters,
  which only copy pixels (:func:`pixel_selections`);
- not the products of two activations (attention's ``q @ k^T`` and
  ``softmax @ v``). Quantising those makes onnxruntime run the softmax
  between them as ``QLinearSoftmax``, which on a 2-core AMD EPYC at
  800x1344 (Twins-PCPVT-S RetinaNet) took 725 ms per image against 219 ms
  for the fp32 ``Softmax``, and their int8 products gained little: the
  file ran 1.41x the fp32 one, against 1.76x with the attention kept in
  fp32 (``tools/analysis/benchmark_deploy.py``, machine as in the
  deployment guide). Keeping them in fp32 also keeps the attention's
  probabilities exact.

The file keeps the fp32 file's ``mmtwins.*`` metadata, so ``tools/test.py``
and ``tools/infer.py`` accept it like the fp32 one.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

# onnxruntime's static quantisation of these operators; everything between
# them stays fp32.
QUANTIZED_OPS = ('Conv', 'MatMul', 'Gemm')


def activation_products(model) -> List[str]:
    """Names of the ``MatMul`` nodes of ``model`` (an ``onnx.ModelProto``)
    whose second operand is computed, not a weight: the products that
    stay fp32 (module docstring)."""
    weights = {init.name for init in model.graph.initializer}
    weights |= {out for node in model.graph.node
                if node.op_type == 'Constant' for out in node.output}
    return [node.name for node in model.graph.node
            if node.op_type == 'MatMul' and node.input[1] not in weights]


def pixel_selections(model) -> List[str]:
    """Names of the ``Conv`` nodes of ``model`` whose every filter is
    one-hot (a single 1, zeros elsewhere): they copy pixels (the k x k
    neighbour gather of the exported SASA attention), so int8 would only
    add quantise and dequantise steps around a copy. They stay fp32."""
    from onnx import numpy_helper
    weights = {init.name: init for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != 'Conv' or node.input[1] not in weights:
            continue
        filters = numpy_helper.to_array(weights[node.input[1]])
        filters = filters.reshape(filters.shape[0], -1)
        if np.isin(filters, (0, 1)).all() and (filters.sum(1) == 1).all():
            found.append(node.name)
    return found


@contextlib.contextmanager
def _calibration_sees_custom_ops(path: str) -> Iterator[None]:
    """Let onnxruntime's calibrator run a file that holds mmtwins
    operators (``--sasa-kernel``).

    The calibrator makes its own ``onnxruntime.SessionOptions()``, with no
    way to pass a custom-operator library; while this is active, the
    options it makes have mmtwins' library registered. Files of standard
    operators are left as they are.
    """
    from onnxruntime.quantization import calibrate

    from .runtime import custom_domains, session_options
    if not custom_domains(path):
        yield
        return
    real = calibrate.onnxruntime

    class _Runtime:
        """``onnxruntime`` with a ``SessionOptions`` that registers the
        library."""

        def __getattr__(self, name: str):
            return getattr(real, name)

        @staticmethod
        def SessionOptions():  # noqa: N802 (onnxruntime's name)
            return session_options(path)

    calibrate.onnxruntime = _Runtime()
    try:
        yield
    finally:
        calibrate.onnxruntime = real


def quantize_int8(fp32: str, int8: str,
                  batches: Iterable[np.ndarray]) -> Dict[str, int]:
    """Write the static int8 quantisation of ``fp32`` to ``int8``.

    Args:
        fp32 (str): End-to-end ONNX file (input ``images``).
        int8 (str): Output path.
        batches (Iterable[np.ndarray]): Calibration pixel batches
            (N, 3, H, W) float32, as the file takes them.

    Returns:
        dict: ``quantized`` (Conv/Gemm/weight MatMul nodes),
        ``fp32_products`` (activation products kept in fp32) and
        ``fp32_selections`` (one-hot pixel-copying convolutions kept in
        fp32, see :func:`pixel_selections`).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):

        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self.items, None)
            return None if batch is None else {'images': batch}

    src = onnx.load(fp32)
    products = activation_products(src)
    keep = products + pixel_selections(src)
    with _calibration_sees_custom_ops(fp32):
        quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS),
                        nodes_to_exclude=keep)
    dst = onnx.load(int8)
    if not any(p.key.startswith('mmtwins.') for p in dst.metadata_props):
        dst.metadata_props.extend(src.metadata_props)
        onnx.save(dst, int8)
    total = sum(node.op_type in QUANTIZED_OPS for node in src.graph.node)
    return dict(quantized=total - len(keep), fp32_products=len(products),
                fp32_selections=len(keep) - len(products))


def describe(counts: Dict[str, int]) -> str:
    """One phrase for :func:`quantize_int8`'s counts."""
    return (f'{counts["quantized"]} Conv/Gemm/MatMul nodes in int8; '
            f'{counts["fp32_products"]} activation products and '
            f'{counts["fp32_selections"]} one-hot pixel copies in fp32')


def _innermost(dataset_cfg: dict) -> dict:
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def calibration_batches(cfg, params: dict, count: int) -> List[np.ndarray]:
    """The first ``count`` training images of ``cfg`` through its test
    pipeline (annotations not loaded), each padded as the runner pads it:
    one (1, 3, H, W) float32 batch per image.

    Args:
        cfg (mmengine.Config): The model's config.
        params (dict): The data preprocessor's parameters
            (:func:`mmtwins.deploy.preprocess.preprocess_params`).
        count (int): How many images (fewer if the set is smaller).
    """
    from mmengine.registry import DATASETS, init_default_scope

    from .preprocess import pad_batch
    init_default_scope(cfg.get('default_scope'))
    test_set = cfg.test_dataloader.dataset
    pipeline: Sequence[dict] = test_set.get('pipeline') or _innermost(
        test_set).get('pipeline') or []
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    _innermost(dataset_cfg)['pipeline'] = [
        step for step in pipeline if step['type'] != 'LoadAnnotations']
    dataset = DATASETS.build(dataset_cfg)
    batches = []
    for i in range(min(count, len(dataset))):
        batch, _ = pad_batch([dataset[i]['inputs']], params)
        batches.append(batch)
    return batches
