"""The graph-break check shared by the Twins and SASA compile tests."""
import torch


def assert_one_graph(model: torch.nn.Module, x: torch.Tensor,
                     training: bool) -> None:
    """``torch._dynamo.explain`` traces ``model(x)`` as one graph with no
    break (in training mode with grad enabled)."""
    torch._dynamo.reset()
    with torch.set_grad_enabled(training):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
