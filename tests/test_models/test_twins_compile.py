"""torch.compile: no graph breaks, and compiled Twins equals eager.

Tiny architectures and small inputs keep the compile time to seconds; the
inputs are chosen so that every LSA stage pads (64x96 gives token maps of
16x24, 8x12, 4x6, 2x3 for window 7).
"""
import pytest
import torch
from twins_tiny import TINY, TINY_SVT

from mmtwins.models import TwinsPCPVT, TwinsSVT

CASES = [(TwinsPCPVT, TINY, {}), (TwinsSVT, TINY_SVT, {}),
         (TwinsSVT, TINY_SVT, dict(lsa_pad='mmseg'))]
IDS = ['pcpvt', 'svt-mask', 'svt-mmseg']


@pytest.mark.parametrize('cls,arch,kwargs', CASES, ids=IDS)
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_no_graph_breaks(cls, arch, kwargs, training):
    model = cls(arch, **kwargs).train(training)
    x = torch.randn(2, 3, 64, 96)
    torch._dynamo.reset()
    with torch.set_grad_enabled(training):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.slow
@pytest.mark.parametrize('cls,arch,kwargs', CASES[:2], ids=IDS[:2])
def test_compiled_equals_eager_outputs_and_gradients(cls, arch, kwargs):
    """Training mode (no dropout), fp32: outputs and every parameter's
    gradient of the inductor-compiled model within 1e-5 relative. Two
    stages (both with LSA and GSA blocks, both padding) keep the inductor
    compile short."""
    torch._dynamo.reset()
    model = cls(arch, out_indices=(0, 1), **kwargs).train()
    x = torch.randn(2, 3, 64, 96)
    weights = [torch.randn(2, d, 1, 1) for d in arch['embed_dims'][:2]]

    def step(fn):
        model.zero_grad(set_to_none=True)
        outs = fn(x)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        return ([o.detach() for o in outs],
                [p.grad.clone() for p in model.parameters()])

    eager_outs, eager_grads = step(model)
    compiled_outs, compiled_grads = step(torch.compile(model))
    for a, b in zip(compiled_outs, eager_outs):
        assert rel_err(a, b) <= 1e-5
    assert len(compiled_grads) == len(eager_grads)
    for a, b in zip(compiled_grads, eager_grads):
        assert rel_err(a, b) <= 1e-5
