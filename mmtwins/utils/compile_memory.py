"""The compiler's activation memory budget for compiled training.

Under ``torch.compile``, AOTAutograd's partitioner decides which forward
activations the compiled backward reads from memory and which it recomputes.
By default it keeps, among others, GELU outputs that feed a matrix product,
so compiled Twins training holds about as much as eager training. With an
activation memory budget ``b`` in [0, 1] it solves a knapsack instead: keep
at most the fraction ``b`` of what it would save by default and recompute
the cheapest of the rest (LayerNorm, GELU, padding), fused into backward
kernels that run anyway. Gradients stay exact.

The budget is ``torch._functorch.config.activation_memory_budget``, read
when a training graph is partitioned, i.e. during the first compiled call.
:func:`activation_memory_budget` sets it only inside a ``with`` block and
restores the previous value on exit, so code outside the block (and other
models compiled outside it) keep the default; the value is part of
AOTAutograd's cache key, so a cached graph compiled under another budget
is not reused. The per-graph alternative,
``torch.autograd.graph.region_activation_memory_budget``, does not fit: it
must annotate every forward op of a graph, and inductor adds an
unannotated ``inductor_seeds`` op as soon as the model has drop path or
dropout, so a real training config does not compile with it.
"""
import contextlib
from typing import Iterator, Optional

import torch._functorch.config as functorch_config


def check_memory_budget(budget: Optional[float]) -> None:
    """``budget`` is None or a number in [0, 1] (one-line error if not)."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f'the activation memory budget must be a number in '
                        f'[0, 1], got {budget!r} ({type(budget).__name__})')
    if not 0. <= budget <= 1.:  # also refuses NaN
        raise ValueError(f'the activation memory budget must be in [0, 1] '
                         f'(1: the compiler default, 0: recompute all it '
                         f'can), got {budget}')


@contextlib.contextmanager
def activation_memory_budget(budget: Optional[float]) -> Iterator[None]:
    """Compile training graphs inside the block under ``budget``.

    Args:
        budget (float, optional): Fraction in [0, 1] of the default saved
            activations that compiled training may keep (0.7 gives
            Twins-S about half mmseg's training peak at about compiled
            speed; see docs/en/benchmarks.md). None leaves the compiler
            default (no change).

    Examples:
        >>> model = torch.compile(TwinsPCPVT('small').train())
        >>> with activation_memory_budget(0.7):
        ...     model(x)[-1].sum().backward()  # compiles under the budget
    """
    check_memory_budget(budget)
    if budget is None:
        yield
        return
    with functorch_config.patch(activation_memory_budget=float(budget)):
        yield
