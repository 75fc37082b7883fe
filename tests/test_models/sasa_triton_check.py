"""Run SASA's Triton kernels through Triton's interpreter on CPU tensors.

Triton decides at import time whether its kernels (and the ``@jit``
functions of ``triton.language``) are interpreted, so this runs as its own
process with ``TRITON_INTERPRET=1`` set before anything imports Triton
(``test_sasa_attention.py::test_triton_kernels_match_unfold_reference``
starts it). Prints one line per case and exits with 1 if any forward
output, log-sum-exp or gradient differs from the unfold reference by more
than the dtype's tolerance.
"""
import os
import sys

assert os.environ.get('TRITON_INTERPRET') == '1', 'set TRITON_INTERPRET=1'

import torch  # noqa: E402
from sasa_reference import unfold_sasa_attention  # noqa: E402

from mmtwins.ops import sasa_export, sasa_op, sasa_triton  # noqa: E402

# (shape, kernel_size): a window larger than the image, odd sizes, a head
# width (6) that is not a power of two (the Triton tiles pad it) and an
# image wider than one column tile (64).
CASES = [((1, 1, 2, 3, 2), 7), ((2, 2, 6, 5, 4), 3), ((1, 1, 4, 4, 5), 5),
         ((1, 1, 2, 2, 67), 3)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def check(shape, kernel_size, dtype) -> float:
    """Largest difference to the reference over every output."""
    batch, heads, head_dim, height, width = shape
    args = [torch.randn(shape, dtype=dtype) for _ in range(3)]
    args += [torch.randn(kernel_size, heads, head_dim // 2, dtype=dtype)
             for _ in range(2)]
    for arg in args:
        arg.requires_grad_(True)
    plain = [a.detach() for a in args]
    out, lse = sasa_op._forward_fused(*plain, kernels=sasa_triton)
    ref = unfold_sasa_attention(*args)
    _, ref_lse = sasa_export.sasa_attention_decomposition(*plain)
    grad = torch.randn_like(out)
    ours = sasa_op._backward_fused(grad, *plain, out, lse, [True] * 5,
                                    kernels=sasa_triton)
    theirs = torch.autograd.grad(ref, args, grad)
    diffs = [(out - ref).abs().max(), (lse - ref_lse).abs().max()]
    diffs += [(a - b).abs().max() for a, b in zip(ours, theirs)]
    return max(d.item() for d in diffs)


def main() -> int:
    assert type(sasa_triton._forward_kernel).__name__ == \
        'InterpretedFunction'
    torch.manual_seed(0)
    failed = 0
    for dtype, tol in TOLERANCE.items():
        for shape, kernel_size in CASES:
            diff = check(shape, kernel_size, dtype)
            ok = diff <= tol
            failed += not ok
            print(f'{"ok" if ok else "FAIL"} {dtype} {shape} k={kernel_size}'
                  f' max diff {diff:.2e} (tolerance {tol:.0e})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
