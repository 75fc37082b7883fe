"""Every Twins backbone under CPU bf16 autocast stays within a stated
tolerance of fp32 (bf16 keeps 8 mantissa bits: ~0.4% per rounding).

Stated tolerance: the relative L2 error of every output map against fp32
is at most 3% (forward, every size of both backbones; measured up to
1.7%); in a training step (tiny arch, freshly initialised) the relative L2
error of the whole parameter gradient at most 10% (measured 4.5%). Single
tensors can be far off where their exact gradient is small against the
rest (attention branches at initialisation, key biases whose exact gradient
is zero): bf16 training relies on fp32 master weights and the optimiser
averaging over steps, as with any autocast model.
"""
import pytest
import torch
from torch.nn.attention import SDPBackend
from torch.profiler import profile

from mmtwins.models import TwinsPCPVT, TwinsSVT
from mmtwins.models.layers.lsa import (
    LocallyGroupedAttention,
    window_sdpa_backends,
)

FWD_TOL = 0.03
GRAD_TOL = 0.10
ARCHS = [(cls, arch) for cls in (TwinsPCPVT, TwinsSVT)
         for arch in ('small', 'base', 'large')]
TINY_SVT = dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2],
                num_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2],
                sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b).norm() / b.norm()).item()


@pytest.mark.parametrize('cls,arch', ARCHS,
                         ids=[f'{c.__name__}-{a}' for c, a in ARCHS])
def test_bf16_autocast_forward_close_to_fp32(cls, arch):
    model = cls(arch).eval()
    model.init_weights()
    x = torch.randn(1, 3, 64, 96)  # LSA pads at every stage
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = model(x)
    assert any(o.dtype == torch.bfloat16 for o in got)  # autocast ran
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= FWD_TOL


def test_bf16_autocast_training_gradients_close_to_fp32():
    model = TwinsSVT(TINY_SVT).train()
    model.init_weights()
    x = torch.randn(2, 3, 64, 96)
    weights = [torch.randn(2, d, 1, 1) for d in TINY_SVT['embed_dims']]

    def grads(autocast: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            loss = sum((o.float() * w).sum()
                       for o, w in zip(model(x), weights))
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    got, ref = grads(True), grads(False)
    assert all(a.dtype == torch.float32 for a in got)  # fp32 master weights
    assert rel_err(torch.cat([a.flatten() for a in got]),
                   torch.cat([b.flatten() for b in ref])) <= GRAD_TOL


def test_lsa_window_kernel_choice():
    """Only CPU reduced-precision queries that need a gradient get SDPA's
    math kernel (PyTorch's CPU flash backward is slow on tiny windows in
    bf16); the rest keep SDPA's own choice."""
    def q(dtype, grad):
        return torch.zeros(4, 2, 49, 32, dtype=dtype, requires_grad=grad)

    assert window_sdpa_backends(q(torch.bfloat16, True)) == [SDPBackend.MATH]
    assert window_sdpa_backends(q(torch.float16, True)) == [SDPBackend.MATH]
    for dtype, grad in ((torch.bfloat16, False), (torch.float32, True),
                        (torch.float32, False)):
        assert SDPBackend.FLASH_ATTENTION in window_sdpa_backends(
            q(dtype, grad))


def test_lsa_bf16_training_skips_cpu_flash_backward():
    attn = LocallyGroupedAttention(64, num_heads=2, window_size=7)
    x = torch.randn(2, 20 * 23, 64, requires_grad=True)  # pads both sides

    def ops(autocast: bool, grad: bool) -> set:
        with profile() as prof, torch.autocast(
                'cpu', dtype=torch.bfloat16, enabled=autocast):
            with torch.set_grad_enabled(grad):
                out = attn(x, (20, 23))
        if grad:
            with profile() as back:
                out.float().sum().backward()
            return {e.name for e in prof.events() + back.events()}
        return {e.name for e in prof.events()}

    flash = 'aten::_scaled_dot_product_flash_attention_for_cpu'
    bf16_train = ops(True, True)
    assert flash not in bf16_train
    assert flash + '_backward' not in bf16_train
    assert flash in ops(True, False)  # inference keeps the fast forward
    assert flash + '_backward' in ops(False, True)  # fp32 unchanged


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('cls', [TwinsPCPVT, TwinsSVT])
def test_cuda_autocast_forward_close_to_fp32(cls, dtype):
    model = cls('small').eval().cuda()
    model.init_weights()
    x = torch.randn(2, 3, 224, 256, device='cuda')
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cuda', dtype=dtype):
            got = model(x)
    for a, b in zip(got, ref):
        assert rel_err(a, b) <= FWD_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('cls', [TwinsPCPVT, TwinsSVT])
def test_cuda_compiled_equals_eager(cls, monkeypatch):
    """fp32 without TF32: compiled forward and gradients equal eager."""
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    torch._dynamo.reset()
    model = cls('small').train().cuda()
    x = torch.randn(2, 3, 224, 256, device='cuda')

    def step(fn):
        model.zero_grad(set_to_none=True)
        outs = fn(x)
        sum(o.square().mean() for o in outs).backward()
        return [o.detach() for o in outs] + [p.grad for p in
                                             model.parameters()]

    eager = step(model)
    compiled = step(torch.compile(model))
    for a, b in zip(compiled, eager):
        assert rel_err(a, b) <= 1e-4
