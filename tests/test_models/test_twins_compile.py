"""torch.compile: no graph breaks, and compiled Twins equals eager.

Tiny architectures and small inputs keep the compile time to seconds; the
inputs are chosen so that every LSA stage pads (64x96 gives token maps of
16x24, 8x12, 4x6, 2x3 for window 7).
"""
import pytest
import torch
from graph_checks import assert_one_graph
from twins_tiny import TINY, TINY_SVT

from mmtwins.models import TwinsPCPVT, TwinsSVT
from mmtwins.utils import activation_memory_budget

CASES = [(TwinsPCPVT, TINY, {}), (TwinsSVT, TINY_SVT, {}),
         (TwinsSVT, TINY_SVT, dict(lsa_pad='mmseg'))]
IDS = ['pcpvt', 'svt-mask', 'svt-mmseg']


@pytest.mark.parametrize('cls,arch,kwargs', CASES, ids=IDS)
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_no_graph_breaks(cls, arch, kwargs, training):
    model = cls(arch, **kwargs).train(training)
    assert_one_graph(model, torch.randn(2, 3, 64, 96), training)


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



def saved_bytes(fn, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one
    call of ``fn``."""
    storages = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(),
                            t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


class Segmentor(torch.nn.Module):
    """A backbone between ops of its own, compiled as one model."""

    def __init__(self, backbone: torch.nn.Module, dims: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(dims, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.backbone(x * 2 - 1)
        return self.head(outs[-1].mean((2, 3))).square().sum()


@pytest.mark.slow
def test_memory_budget_saves_less_with_exact_gradients():
    """Compiled under ``activation_memory_budget(0)`` a model with a Twins
    backbone saves far fewer activation bytes than compiled without it,
    and its loss and every gradient equal eager within 1e-5 relative; the
    budget is gone after the block; with drop path (random ops in the
    graph) it compiles and trains too."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)
    dims = TINY_SVT['embed_dims'][1]
    model = Segmentor(TwinsSVT(TINY_SVT, out_indices=(0, 1)), dims).train()
    torch._dynamo.reset()
    full = saved_bytes(torch.compile(model), x)
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with activation_memory_budget(0.):
        lean = saved_bytes(compiled, x)
    assert torch._functorch.config.activation_memory_budget == 1.0
    assert lean < 0.7 * full

    def step(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = step(model)
    compiled_loss, compiled_grads = step(compiled)  # compiled above
    assert rel_err(compiled_loss, eager_loss) <= 1e-5
    assert len(compiled_grads) == len(eager_grads)
    for a, b in zip(compiled_grads, eager_grads):
        assert rel_err(a, b) <= 1e-5

    dropping = Segmentor(TwinsPCPVT(TINY, out_indices=(0, 1),
                                    drop_path_rate=0.2), dims).train()
    with activation_memory_budget(0.5):
        torch.compile(dropping)(x).backward()
    assert all(p.grad is not None for p in dropping.parameters())


@pytest.mark.parametrize('budget,error,match', [
    (1.5, ValueError, r'budget must be in \[0, 1\] .*got 1.5'),
    (float('nan'), ValueError, r'budget must be in \[0, 1\]'),
    ('0.5', TypeError, r'budget must be a number in \[0, 1\], got '),
    (True, TypeError, r'budget must be a number'),
])
def test_memory_budget_is_validated(budget, error, match):
    with pytest.raises(error, match=match) as info:
        with activation_memory_budget(budget):
            pass
    assert '\n' not in str(info.value)
