"""Fused Triton kernels of SASA's local attention (the CUDA path).

One launch per pass instead of one small kernel per window offset:

- ``_forward_kernel``: a program takes one image row of ``BLOCK_W`` query
  pixels of one ``batch * head`` slice with all ``head_dim`` channels, walks
  the k x k offsets with an online softmax (as flash attention does over key
  blocks) and writes the output and the log-sum-exp of the logits;
- ``_query_backward_kernel``: per query tile, recomputes the probabilities
  from the log-sum-exp and writes the query gradient and the gradients of
  the row/column positional logits;
- ``_key_backward_kernel``: per *key* tile, visits the k^2 queries that see
  it and accumulates the key and value gradients, so no two programs write
  the same pixel (no atomics; deterministic).

Nothing k^2-sized is stored. Neighbours outside the image are masked, as in
the exact offset loop of :mod:`.sasa_op`, which stays the fallback when
Triton is missing. The kernels take ``(batch * heads, head_dim, H, W)``
tensors and the precomputed positional logits ``(batch * heads, k, H, W)``;
:mod:`.sasa_op` does the positional matmuls around them. Accumulation is in
fp32 (fp64 for fp64 inputs).

With ``TRITON_INTERPRET=1`` set before this module is imported, the same
kernels run on CPU tensors through Triton's interpreter; the tests check
them that way against the unfold reference.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None


def available() -> bool:
    """Whether Triton can be imported (the CUDA path's requirement)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _forward_kernel(q_ptr, k_ptr, v_ptr, pos_row_ptr, pos_col_ptr,
                        out_ptr, lse_ptr, height, width,
                        HEAD_DIM: tl.constexpr, SIZE: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
                        ACC: tl.constexpr):
        bh = tl.program_id(0)
        row = tl.program_id(1)
        cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
        chans = tl.arange(0, BLOCK_D)
        plane = height * width
        col_ok = cols < width
        chan_ok = chans < HEAD_DIM
        base = bh * HEAD_DIM * plane + chans[:, None] * plane
        tile_ok = chan_ok[:, None] & col_ok[None, :]
        q = tl.load(q_ptr + base + row * width + cols[None, :], mask=tile_ok,
                    other=0.).to(ACC)
        pos_base = bh * SIZE * plane + row * width + cols
        radius = SIZE // 2
        peak = tl.full((BLOCK_W, ), -1e30, ACC)
        total = tl.zeros((BLOCK_W, ), ACC)
        acc = tl.zeros((BLOCK_D, BLOCK_W), ACC)
        for dy in range(SIZE):
            key_row = row + dy - radius
            # A vector, not a scalar: Triton's interpreter rejects masks
            # mixing scalar and vector booleans.
            key_rows = cols * 0 + key_row
            row_ok = (key_rows >= 0) & (key_rows < height)
            pos_row = tl.load(pos_row_ptr + pos_base + dy * plane,
                              mask=col_ok, other=0.).to(ACC)
            for dx in range(SIZE):
                key_cols = cols + dx - radius
                ok = col_ok & row_ok & (key_cols >= 0) & (key_cols < width)
                offset = base + key_row * width + key_cols[None, :]
                ok_tile = chan_ok[:, None] & ok[None, :]
                k = tl.load(k_ptr + offset, mask=ok_tile, other=0.).to(ACC)
                pos_col = tl.load(pos_col_ptr + pos_base + dx * plane,
                                  mask=col_ok, other=0.).to(ACC)
                logit = tl.sum(q * k, axis=0) + pos_row + pos_col
                logit = tl.where(ok, logit, float('-inf'))
                new_peak = tl.maximum(peak, logit)
                rescale = tl.exp(peak - new_peak)
                prob = tl.exp(logit - new_peak)
                v = tl.load(v_ptr + offset, mask=ok_tile, other=0.).to(ACC)
                total = total * rescale + prob
                acc = acc * rescale[None, :] + prob[None, :] * v
                peak = new_peak
        # Columns past the image edge saw no key; keep them finite.
        total = tl.where(col_ok, total, 1.)
        out = acc / total[None, :]
        tl.store(out_ptr + base + row * width + cols[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=tile_ok)
        tl.store(lse_ptr + bh * plane + row * width + cols,
                 (peak + tl.log(total)).to(lse_ptr.dtype.element_ty),
                 mask=col_ok)

    @triton.jit
    def _query_backward_kernel(q_ptr, k_ptr, v_ptr, pos_row_ptr,
                               pos_col_ptr, grad_ptr, lse_ptr, row_term_ptr,
                               grad_q_ptr, grad_pos_row_ptr,
                               grad_pos_col_ptr, height, width,
                               HEAD_DIM: tl.constexpr, SIZE: tl.constexpr,
                               BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
                               ACC: tl.constexpr):
        bh = tl.program_id(0)
        row = tl.program_id(1)
        cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
        chans = tl.arange(0, BLOCK_D)
        plane = height * width
        col_ok = cols < width
        chan_ok = chans < HEAD_DIM
        base = bh * HEAD_DIM * plane + chans[:, None] * plane
        tile_ok = chan_ok[:, None] & col_ok[None, :]
        here = base + row * width + cols[None, :]
        q = tl.load(q_ptr + here, mask=tile_ok, other=0.).to(ACC)
        grad = tl.load(grad_ptr + here, mask=tile_ok, other=0.).to(ACC)
        pixel = bh * plane + row * width + cols
        lse = tl.load(lse_ptr + pixel, mask=col_ok, other=0.).to(ACC)
        row_term = tl.load(row_term_ptr + pixel, mask=col_ok,
                           other=0.).to(ACC)
        pos_base = bh * SIZE * plane + row * width + cols
        radius = SIZE // 2
        grad_q = tl.zeros((BLOCK_D, BLOCK_W), ACC)
        for dy in range(SIZE):
            key_row = row + dy - radius
            # A vector, not a scalar: Triton's interpreter rejects masks
            # mixing scalar and vector booleans.
            key_rows = cols * 0 + key_row
            row_ok = (key_rows >= 0) & (key_rows < height)
            pos_row = tl.load(pos_row_ptr + pos_base + dy * plane,
                              mask=col_ok, other=0.).to(ACC)
            grad_row = tl.zeros((BLOCK_W, ), ACC)
            for dx in range(SIZE):
                key_cols = cols + dx - radius
                ok = col_ok & row_ok & (key_cols >= 0) & (key_cols < width)
                offset = base + key_row * width + key_cols[None, :]
                ok_tile = chan_ok[:, None] & ok[None, :]
                k = tl.load(k_ptr + offset, mask=ok_tile, other=0.).to(ACC)
                v = tl.load(v_ptr + offset, mask=ok_tile, other=0.).to(ACC)
                pos_col = tl.load(pos_col_ptr + pos_base + dx * plane,
                                  mask=col_ok, other=0.).to(ACC)
                logit = tl.sum(q * k, axis=0) + pos_row + pos_col
                prob = tl.where(ok, tl.exp(logit - lse), 0.)
                grad_logit = prob * (tl.sum(grad * v, axis=0) - row_term)
                grad_q += grad_logit[None, :] * k
                grad_row += grad_logit
                # Each program owns its pixels: read-modify-write is safe.
                col_at = grad_pos_col_ptr + pos_base + dx * plane
                old = tl.load(col_at, mask=col_ok, other=0.).to(ACC)
                tl.store(col_at,
                         (old + grad_logit).to(
                             grad_pos_col_ptr.dtype.element_ty),
                         mask=col_ok)
            tl.store(grad_pos_row_ptr + pos_base + dy * plane,
                     grad_row.to(grad_pos_row_ptr.dtype.element_ty),
                     mask=col_ok)
        tl.store(grad_q_ptr + here, grad_q.to(grad_q_ptr.dtype.element_ty),
                 mask=tile_ok)

    @triton.jit
    def _key_backward_kernel(q_ptr, k_ptr, v_ptr, pos_row_ptr, pos_col_ptr,
                             grad_ptr, lse_ptr, row_term_ptr, grad_k_ptr,
                             grad_v_ptr, height, width,
                             HEAD_DIM: tl.constexpr, SIZE: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
                             ACC: tl.constexpr):
        bh = tl.program_id(0)
        row = tl.program_id(1)
        cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
        chans = tl.arange(0, BLOCK_D)
        plane = height * width
        col_ok = cols < width
        chan_ok = chans < HEAD_DIM
        base = bh * HEAD_DIM * plane + chans[:, None] * plane
        tile_ok = chan_ok[:, None] & col_ok[None, :]
        here = base + row * width + cols[None, :]
        k = tl.load(k_ptr + here, mask=tile_ok, other=0.).to(ACC)
        v = tl.load(v_ptr + here, mask=tile_ok, other=0.).to(ACC)
        radius = SIZE // 2
        grad_k = tl.zeros((BLOCK_D, BLOCK_W), ACC)
        grad_v = tl.zeros((BLOCK_D, BLOCK_W), ACC)
        for dy in range(SIZE):
            # The query that sees this key at row offset dy - radius.
            query_row = row - (dy - radius)
            query_rows = cols * 0 + query_row
            row_ok = (query_rows >= 0) & (query_rows < height)
            for dx in range(SIZE):
                query_cols = cols - (dx - radius)
                ok = (col_ok & row_ok & (query_cols >= 0)
                      & (query_cols < width))
                ok_tile = chan_ok[:, None] & ok[None, :]
                offset = base + query_row * width + query_cols[None, :]
                q = tl.load(q_ptr + offset, mask=ok_tile, other=0.).to(ACC)
                grad = tl.load(grad_ptr + offset, mask=ok_tile,
                               other=0.).to(ACC)
                pixel = bh * plane + query_row * width + query_cols
                lse = tl.load(lse_ptr + pixel, mask=ok, other=0.).to(ACC)
                row_term = tl.load(row_term_ptr + pixel, mask=ok,
                                   other=0.).to(ACC)
                pos = bh * SIZE * plane + query_row * width + query_cols
                pos_row = tl.load(pos_row_ptr + pos + dy * plane, mask=ok,
                                  other=0.).to(ACC)
                pos_col = tl.load(pos_col_ptr + pos + dx * plane, mask=ok,
                                  other=0.).to(ACC)
                logit = tl.sum(q * k, axis=0) + pos_row + pos_col
                prob = tl.where(ok, tl.exp(logit - lse), 0.)
                grad_logit = prob * (tl.sum(grad * v, axis=0) - row_term)
                grad_k += grad_logit[None, :] * q
                grad_v += prob[None, :] * grad
        tl.store(grad_k_ptr + here, grad_k.to(grad_k_ptr.dtype.element_ty),
                 mask=tile_ok)
        tl.store(grad_v_ptr + here, grad_v.to(grad_v_ptr.dtype.element_ty),
                 mask=tile_ok)


def _launch_args(q: Tensor, size: int) -> Tuple[tuple, dict]:
    batch_heads, head_dim, height, width = q.shape
    block_w = min(64, triton.next_power_of_2(width))
    grid = (batch_heads, height, triton.cdiv(width, block_w))
    meta = dict(
        HEAD_DIM=head_dim,
        SIZE=size,
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_W=block_w,
        ACC=tl.float64 if q.dtype == torch.float64 else tl.float32)
    return grid, meta


def forward(q: Tensor, k: Tensor, v: Tensor, pos_row: Tensor,
            pos_col: Tensor) -> Tuple[Tensor, Tensor]:
    """Output ``(BH, d, H, W)`` and log-sum-exp ``(BH, H, W)``.

    Args:
        q, k, v (Tensor): Contiguous ``(BH, d, H, W)``.
        pos_row, pos_col (Tensor): Contiguous positional logits
            ``(BH, k, H, W)``.
    """
    batch_heads, _, height, width = q.shape
    out = torch.empty_like(q)
    lse = q.new_empty(batch_heads, height, width)
    grid, meta = _launch_args(q, pos_row.shape[1])
    _forward_kernel[grid](q, k, v, pos_row, pos_col, out, lse, height, width,
                          **meta)
    return out, lse


def backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, pos_row: Tensor,
             pos_col: Tensor, out: Tensor, lse: Tensor,
             needs: Sequence[bool] = (True, ) * 4
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients for ``q, k, v`` and the positional logits.

    ``needs`` (q, k, v, positional) is taken for the interface shared with
    :mod:`.sasa_cpu`; the two kernels compute every gradient, and the
    caller drops the ones it does not need.

    Returns:
        tuple: ``grad_q, grad_k, grad_v`` ``(BH, d, H, W)`` (through the
        content logits and values only) and ``grad_pos_row, grad_pos_col``
        ``(BH, k, H, W)``.
    """
    _, _, height, width = q.shape
    row_term = (grad * out).sum(dim=1).contiguous()
    grad_q = torch.empty_like(q)
    grad_k = torch.empty_like(k)
    grad_v = torch.empty_like(v)
    grad_pos_row = torch.empty_like(pos_row)
    grad_pos_col = torch.zeros_like(pos_col)
    grid, meta = _launch_args(q, pos_row.shape[1])
    _query_backward_kernel[grid](q, k, v, pos_row, pos_col, grad, lse,
                                 row_term, grad_q, grad_pos_row,
                                 grad_pos_col, height, width, **meta)
    _key_backward_kernel[grid](q, k, v, pos_row, pos_col, grad, lse,
                               row_term, grad_k, grad_v, height, width,
                               **meta)
    return grad_q, grad_k, grad_v, grad_pos_row, grad_pos_col
