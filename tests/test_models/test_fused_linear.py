"""The fused oneDNN linear path (CPU inference) against the plain ops."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmtwins.models import TwinsPCPVT, TwinsSVT
from mmtwins.models.layers import TwinsBlock, fused_linear
from mmtwins.models.layers.fused_linear import linear, linear_weights

needs_kernel = pytest.mark.skipif(
    fused_linear._LINEAR_POINTWISE is None,
    reason='this torch build has no mkldnn linear_pointwise')


class _Counting:
    """Wraps the oneDNN op and counts calls, to prove the path is taken."""

    def __init__(self, op):
        self.op, self.calls = op, 0

    def __call__(self, *args):
        self.calls += 1
        return self.op(*args)

    def binary(self, *args):
        self.calls += 1
        return self.op.binary(*args)


@pytest.fixture
def counting(monkeypatch):
    wrapper = _Counting(fused_linear._LINEAR_POINTWISE)
    monkeypatch.setattr(fused_linear, '_LINEAR_POINTWISE', wrapper)
    return wrapper


def _plain(x, layer, act, residual):
    out = F.linear(x, layer.weight, layer.bias)
    if act == 'gelu':
        out = F.gelu(out)
    return out if residual is None else out + residual


@needs_kernel
@pytest.mark.parametrize('act', [None, 'gelu'])
@pytest.mark.parametrize('with_residual', [False, True])
@pytest.mark.parametrize('bias', [True, False])
def test_fused_equals_plain(counting, act, with_residual, bias):
    torch.manual_seed(0)
    layer = nn.Linear(48, 96, bias=bias)
    # a non-contiguous input, as LSA and GSA pass
    x = torch.randn(2, 48, 37).transpose(1, 2)
    residual = torch.randn(2, 37, 96) if with_residual else None
    with torch.no_grad():
        got = linear(x, layer, act, residual)
        want = _plain(x, layer, act, residual)
    assert counting.calls == 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_linear_weights_fused_and_plain(counting):
    w, b = torch.randn(24, 16), torch.randn(24)
    x = torch.randn(5, 16)
    with torch.no_grad():
        got = linear_weights(x, w, b)
    assert counting.calls == 1
    torch.testing.assert_close(got, F.linear(x, w, b))
    x.requires_grad_(True)
    linear_weights(x, w, b).sum().backward()
    assert counting.calls == 1 and x.grad is not None


@needs_kernel
def test_plain_path_whenever_the_kernel_does_not_apply(counting):
    layer = nn.Linear(8, 8)
    x = torch.randn(3, 8)
    out = linear(x, layer, 'gelu')  # parameters want gradients
    out.sum().backward()
    assert layer.weight.grad is not None
    with torch.no_grad():
        linear(x.double(), layer.double(), 'gelu')  # not fp32
        layer.float()
        handle = layer.register_forward_hook(lambda *a: None)
        linear(x, layer)  # hooks must see the call
        handle.remove()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert linear(x, layer).dtype == torch.bfloat16
    assert counting.calls == 0
    with pytest.raises(ValueError, match='act must be one of'):
        linear(x, layer, 'relu')


def test_eval_block_fused_equals_training_path():
    """In eval mode the block fuses its residuals and GELU; same result as
    the plain modules (window 7 pads both sides here)."""
    torch.manual_seed(0)
    for window in (1, 7):
        block = TwinsBlock(32, 4, 4, sr_ratio=2, window_size=window)
        for p in block.parameters():
            nn.init.normal_(p, std=0.2)
        block.eval()
        x = torch.randn(2, 10 * 12, 32)
        with torch.no_grad():
            got = block(x, (10, 12))
            mid = x + block.attn(block.norm1(x), (10, 12))
            want = mid + block.mlp.fc2(F.gelu(block.mlp.fc1(
                block.norm2(mid))))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize('model', [
    TwinsPCPVT('small'),
    TwinsSVT('small', lsa_pad='mask'),
    TwinsSVT('small', lsa_pad='zero'),
], ids=['pcpvt', 'svt-mask', 'svt-zero'])
def test_backbone_inference_fused_equals_plain(counting, monkeypatch, model):
    """A whole backbone's inference with the fused kernel equals the same
    forward on plain PyTorch ops, at a size where LSA pads."""
    torch.manual_seed(0)
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        fused = model(x)
    assert counting.calls > 0
    monkeypatch.setattr(fused_linear, '_LINEAR_POINTWISE', None)
    with torch.no_grad():
        plain = model(x)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
