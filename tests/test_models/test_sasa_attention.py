"""SASAttention: exactness against the unfold reference, locality, borders.
"""
import copy
import os
import subprocess
import sys
import warnings

import pytest
import torch
from sasa_reference import unfold_sasa_attention, unfold_sasa_layer

from mmtwins.models.layers import SASAttention
from mmtwins.ops import sasa_attention, sasa_cpu, sasa_export, sasa_op
from mmtwins.ops.kernel_cache import KernelCacheError

pytestmark = pytest.mark.usefixtures('single_thread')


def _inputs(layer, batch, height, width, dtype):
    x = torch.randn(batch, layer.in_channels, height, width, dtype=dtype,
                    requires_grad=True)
    return x


def _grads(out, x, layer, grad):
    params = list(layer.parameters())
    return torch.autograd.grad(out, [x, *params], grad)


# (height, width, kernel_size, stride): odd and even sizes, windows that
# overhang the image on several sides, and an image smaller than the window.
CASES = [
    (9, 11, 3, 1),
    (9, 11, 3, 2),
    (7, 13, 5, 1),
    (7, 13, 5, 2),
    (11, 10, 7, 1),
    (11, 9, 7, 2),
    (3, 2, 7, 1),
    (5, 4, 7, 2),
]


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10),
                                       (torch.float32, 1e-5)])
@pytest.mark.parametrize('height,width,kernel_size,stride', CASES)
def test_layer_matches_unfold_reference(height, width, kernel_size, stride,
                                        dtype, tol):
    layer = SASAttention(8, 16, kernel_size, num_heads=4,
                         stride=stride).to(dtype)
    x = _inputs(layer, 2, height, width, dtype)
    out = layer(x)
    ref = unfold_sasa_layer(layer, x)
    assert out.shape == ref.shape == (2, 16, -(-height // stride),
                                      -(-width // stride))
    assert (out - ref).abs().max() <= tol
    grad = torch.randn_like(out)
    for ours, theirs in zip(_grads(out, x, layer, grad),
                            _grads(ref, x, layer, grad)):
        assert (ours - theirs).abs().max() <= tol


def _check_exact(layer, x, tol=1e-10):
    """``layer(x)`` and its gradients equal the unfold reference's."""
    out = layer(x)
    ref = unfold_sasa_layer(layer, x)
    assert (out - ref).abs().max() <= tol
    grad = torch.randn_like(out)
    for ours, theirs in zip(_grads(out, x, layer, grad),
                            _grads(ref, x, layer, grad)):
        assert (ours - theirs).abs().max() <= tol
    return out


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10),
                                       (torch.float32, 1e-5)])
@pytest.mark.parametrize('height,width,kernel_size', [(5, 16, 7), (6, 37, 5),
                                                      (4, 48, 3), (7, 21, 9),
                                                      (3, 17, 1)])
def test_cpu_kernel_whole_vectors_are_exact(height, width, kernel_size, dtype,
                                            tol):
    """Rows wide enough for the kernel's SIMD vectors (16 floats, 8
    doubles), with and without a tail of single columns: the float path's
    vector exp and every vector loop meet the reference, both in the loops
    specialised for windows of 3, 5 and 7 and in the loops for any size
    (9 and 1 here)."""
    layer = SASAttention(8, 16, kernel_size, num_heads=2).to(dtype)
    _check_exact(layer, _inputs(layer, 2, height, width, dtype), tol)


@pytest.mark.parametrize('width', [16, 21])
def test_cpu_kernel_bfloat16_matches_float32(width):
    """bf16 inputs are computed in float32 inside the kernel."""
    args = _op_args((1, 2, 8, 5, width), 5, dtype=torch.float32,
                    requires_grad=False)
    out, lse = torch.ops.mmtwins.sasa_attention(*args)
    half = [a.bfloat16() for a in args]
    out16, lse16 = torch.ops.mmtwins.sasa_attention(*half)
    assert out16.dtype == lse16.dtype == torch.bfloat16
    ref, ref_lse = torch.ops.mmtwins.sasa_attention(
        *[a.float() for a in half])
    assert (out16.float() - ref).abs().max() <= 0.02 * ref.abs().max()
    assert (lse16.float() - ref_lse).abs().max() <= 0.02 * ref_lse.abs().max()
    assert (ref - out).abs().max() <= 0.1 * out.abs().max()


@pytest.mark.parametrize('threads', [1, 2, 4])
@pytest.mark.parametrize('height,width,kernel_size', [(9, 6, 5), (13, 20, 3),
                                                      (37, 5, 7), (50, 4, 3)])
def test_cpu_kernel_threads_are_exact(threads, height, width, kernel_size):
    """ATen's intra-op threads split the C++ kernel's rows (forward) and
    bands of 16 or more rows in two phases (backward: 37 and 50 rows make
    three and four bands, the last one partial); the results stay those of
    the reference."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = SASAttention(4, 8, kernel_size, num_heads=2).double()
        x = _inputs(layer, 3, height, width, torch.float64)
        assert sasa_op._fused_kernels(x) is sasa_cpu
        out = _check_exact(layer, x)
        with torch.no_grad():
            assert torch.equal(layer(x), out.detach())
        with torch.inference_mode():
            assert torch.equal(layer(x), out.detach())
        # The op leaves PyTorch's thread setting as it was.
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize('chunk_numel', [40, 300, 10**6])
def test_offset_loop_fallback_is_exact(monkeypatch, chunk_numel):
    """The offset loop (other devices, or no C++ compiler) in row chunks
    and batch*head groups of several sizes."""
    monkeypatch.setattr(sasa_op, '_fused_kernels', lambda query: None)
    monkeypatch.setattr(sasa_op, '_CPU_CHUNK_NUMEL', chunk_numel)
    for kernel_size, stride in ((5, 1), (3, 2)):
        layer = SASAttention(4, 8, kernel_size, num_heads=2,
                             stride=stride).double()
        _check_exact(layer, _inputs(layer, 3, 9, 6, torch.float64))


def test_cpu_kernel_build_failure_falls_back_with_one_warning(monkeypatch):
    """A kernel that cannot be had says why once, then SASA runs the exact
    loop (the cache's messages: test_sasa_kernel_cache.py)."""
    monkeypatch.setattr(sasa_cpu, '_module', None)
    monkeypatch.setattr(sasa_cpu, '_failure', None)

    def broken_build():
        raise KernelCacheError(
            'the SASA CPU kernel could not be built (RuntimeError: '
            'sasa_cpu.cpp:12:3: error: expected ";")')

    monkeypatch.setattr(sasa_cpu, '_build', broken_build)
    layer = SASAttention(4, 8, 3, num_heads=2).double()
    x = _inputs(layer, 1, 6, 7, torch.float64)
    with pytest.warns(UserWarning) as record:
        _check_exact(layer, x)
    assert len(record) == 1
    message = str(record[0].message)
    assert ('could not be built (RuntimeError: sasa_cpu.cpp:12:3: error: '
            'expected ";")' in message and 'offset loop' in message
            and '\n' not in message)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        layer(x)  # no second warning


def test_cpu_kernel_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(sasa_cpu, '_module', None)
    monkeypatch.setattr(sasa_cpu, '_failure', None)
    monkeypatch.setenv('MMTWINS_SASA_CPU_KERNEL', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert sasa_cpu.kernel() is None
    layer = SASAttention(4, 8, 3, num_heads=2).double()
    _check_exact(layer, _inputs(layer, 2, 5, 8, torch.float64))


def _op_args(shape, kernel_size, dtype=torch.float64, requires_grad=True):
    batch, heads, head_dim, height, width = shape
    args = [torch.randn(shape, dtype=dtype) for _ in range(3)]
    args += [torch.randn(kernel_size, heads, head_dim // 2, dtype=dtype)
             for _ in range(2)]
    return [a.requires_grad_(requires_grad) for a in args]


@pytest.mark.parametrize('shape,kernel_size', [((2, 2, 4, 5, 6), 3),
                                               ((1, 1, 2, 3, 2), 5)])
def test_opcheck(shape, kernel_size):
    """Schema, fake implementation and autograd registration of the ops."""
    args = _op_args(shape, kernel_size)
    torch.library.opcheck(torch.ops.mmtwins.sasa_attention.default, args)
    out, lse = torch.ops.mmtwins.sasa_attention(*args)
    backward_args = [torch.randn_like(out), *[a.detach() for a in args],
                     out.detach(), lse.detach()]
    for mask in ([True] * 5, [False, True, False, True, False]):
        torch.library.opcheck(
            torch.ops.mmtwins.sasa_attention_backward.default,
            backward_args + [mask])


def test_log_sum_exp_output():
    args = _op_args((1, 2, 4, 6, 5), 3, requires_grad=False)
    out, lse = torch.ops.mmtwins.sasa_attention(*args)
    ref_out, ref_lse = sasa_export.sasa_attention_decomposition(*args)
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(lse, ref_lse, atol=1e-12)


def test_triton_kernels_match_unfold_reference():
    """The CUDA path's fused kernels, run by Triton's interpreter on CPU.

    Forward, log-sum-exp and all five gradients in float64 and float32, in
    a separate process (``sasa_triton_check.py``): Triton must see
    ``TRITON_INTERPRET=1`` before it is first imported.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([root, here]))
    result = subprocess.run(
        [sys.executable, os.path.join(here, 'sasa_triton_check.py')],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('ok ') == 8, result.stdout


def test_export_decomposition_matches_unfold_reference():
    """The standard-op form used for ONNX export, with gradients."""
    args = _op_args((2, 2, 4, 7, 6), 5)
    out, _ = sasa_export.sasa_attention_decomposition(*args)
    ref = unfold_sasa_attention(*args)
    assert (out - ref).abs().max() <= 1e-12
    grad = torch.randn_like(out)
    for ours, theirs in zip(torch.autograd.grad(out, args, grad),
                            torch.autograd.grad(ref, args, grad)):
        assert (ours - theirs).abs().max() <= 1e-12


def test_function_gradcheck():
    shape = (1, 2, 2, 4, 3)
    args = [torch.randn(shape, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]
    args += [torch.randn(3, 2, 1, dtype=torch.float64, requires_grad=True)
             for _ in range(2)]
    assert torch.autograd.gradcheck(sasa_attention, args)
    out = sasa_attention(*args)
    assert torch.allclose(out, unfold_sasa_attention(*args), atol=1e-12)


def test_only_requested_gradients_are_computed():
    layer = SASAttention(4, 8, 3, num_heads=2).double()
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    layer.value_conv.weight.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.value_conv.weight.grad is None
    assert layer.query_conv.weight.grad is not None


def test_gradients_reach_every_parameter():
    layer = SASAttention(8, 16, 3, num_heads=4, stride=2)
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    layer(x).pow(2).sum().backward()
    params = dict(layer.named_parameters())
    assert set(params) == {'query_conv.weight', 'key_conv.weight',
                           'value_conv.weight', 'rel_h', 'rel_w'}
    for name, param in params.items():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize('kernel_size', [3, 5])
def test_locality(kernel_size):
    """Only pixels within the window of p change p's output."""
    layer = SASAttention(4, 8, kernel_size, num_heads=2).double()
    x = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    i, j, radius = 6, 5, kernel_size // 2
    with torch.no_grad():
        out = layer(x)[0, :, i, j]
        for di, dj, inside in ((radius + 1, 0, False), (0, -radius - 1,
                                                        False),
                               (radius, radius, True), (-radius, 0, True)):
            moved = x.clone()
            moved[0, :, i + di, j + dj] += 3.0
            changed = not torch.equal(layer(moved)[0, :, i, j], out)
            assert changed == inside, (di, dj)


def test_translation_equivariance_away_from_borders():
    layer = SASAttention(4, 8, 5, num_heads=2).double()
    x = torch.randn(1, 4, 16, 18, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(3, 2), dims=(2, 3))
    with torch.no_grad():
        out, out_shifted = layer(x), layer(shifted)
    # Pixels whose windows (radius 2) lie inside the image in both inputs.
    assert torch.allclose(out_shifted[..., 5:14, 4:16],
                          out[..., 2:11, 2:14], atol=1e-12)
    # Next to the border the windows differ, so do the outputs.
    assert not torch.allclose(out_shifted[..., 3, 4:16], out[..., 0, 2:14])


def test_borders_are_masked_not_zero_padded():
    """A constant image has constant values; masking keeps them exact.

    Attending to zero-padded neighbours would pull border outputs towards
    the value of a zero input.
    """
    layer = SASAttention(3, 8, 7, num_heads=2).double()
    x = torch.ones(1, 3, 5, 6, dtype=torch.float64) * torch.tensor(
        [1.0, -2.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        out = layer(x)
        value = layer.value_conv(x)
    assert torch.allclose(out, value, atol=1e-12)


def test_stride_two_pools_after_attention():
    layer = SASAttention(4, 8, 3, num_heads=2, stride=2).double()
    x = torch.randn(1, 4, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        dense = SASAttention(4, 8, 3, num_heads=2).double()
        dense.load_state_dict(layer.state_dict())
        expected = torch.nn.functional.avg_pool2d(
            dense(x), 2, 2, ceil_mode=True)
        out = layer(x)
    assert out.shape == (1, 8, 4, 4)
    assert torch.allclose(out, expected)
    # The last, partial row of windows averages in-image pixels only.
    assert torch.allclose(out[:, :, 3, 0],
                          dense(x)[:, :, 6, 0:2].mean(-1))


def test_scale_and_parameter_layout():
    layer = SASAttention(16, 32, 7, num_heads=8)
    assert layer.scale == pytest.approx(4**-0.5)
    assert layer.rel_h.shape == layer.rel_w.shape == (7, 16)
    assert SASAttention(16, 32, qk_scale=1.0).scale == 1.0
    # Attention parameters do not depend on the window (SASA §3).
    count = sum(p.numel() for p in layer.parameters())
    assert count == 3 * 16 * 32 + 2 * 7 * 16


@pytest.mark.parametrize('kwargs,message', [
    (dict(out_channels=30, num_heads=8), 'divisible by num_heads'),
    (dict(out_channels=24, num_heads=8), 'must be even'),
    (dict(kernel_size=4), 'positive odd'),
    (dict(kernel_size=0), 'positive odd'),
    (dict(kernel_size=-3), 'positive odd'),
    (dict(stride=3), 'stride must be 1 or 2'),
    (dict(num_heads=0), 'num_heads must be a positive int'),
    (dict(in_channels=0), 'in_channels must be a positive int'),
])
def test_bad_arguments_raise(kwargs, message):
    args = dict(in_channels=8, out_channels=32, kernel_size=3, num_heads=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SASAttention(**args)


def test_bad_input_raises():
    layer = SASAttention(8, 16, 3, num_heads=2)
    with pytest.raises(ValueError, match=r'expects \(B, 8, H, W\)'):
        layer(torch.rand(1, 4, 5, 5))
    with pytest.raises(ValueError, match='one shape'):
        sasa_attention(torch.rand(1, 2, 4, 3, 3), torch.rand(1, 2, 4, 3, 4),
                       torch.rand(1, 2, 4, 3, 3), torch.rand(3, 2, 2),
                       torch.rand(3, 2, 2))
    with pytest.raises(ValueError, match='odd window'):
        shape = (1, 2, 4, 3, 3)
        sasa_attention(torch.rand(shape), torch.rand(shape),
                       torch.rand(shape), torch.rand(4, 2, 2),
                       torch.rand(4, 2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_reference(monkeypatch):
    """The same layer on CUDA (one chunk for the whole map)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    layer = SASAttention(16, 32, 7, num_heads=8, stride=2).cuda()
    x = torch.randn(2, 16, 23, 30, device='cuda', requires_grad=True)
    out = layer(x)
    ref = unfold_sasa_layer(layer, x)
    assert (out - ref).abs().max() <= 1e-5
    grad = torch.randn_like(out)
    for ours, theirs in zip(_grads(out, x, layer, grad),
                            _grads(ref, x, layer, grad)):
        assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize('stride', [1, 2])
def test_empty_batch(stride):
    layer = SASAttention(4, 8, 3, num_heads=2, stride=stride)
    x = torch.randn(0, 4, 7, 6, requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 8, -(-7 // stride), -(-6 // stride))
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert layer.rel_h.grad.abs().sum() == 0


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16,
                                   torch.bfloat16])
def test_input_dtype_mismatch_is_one_line(dtype):
    layer = SASAttention(4, 8, 3, num_heads=2)
    with pytest.raises(TypeError, match='has torch.float32 parameters') as e:
        layer(torch.randn(1, 4, 5, 5, dtype=dtype))
    assert '\n' not in str(e.value)


def test_bfloat16_model_runs():
    """A model cast to bf16 runs the op in bf16 (close to fp32)."""
    layer = SASAttention(4, 8, 3, num_heads=2)
    x = torch.randn(1, 4, 6, 5)
    ref = layer(x)
    out = copy.deepcopy(layer).bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.1 * ref.abs().max()
