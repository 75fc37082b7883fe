"""Exact k x k local self-attention of SASA, without k^2-fold copies.

Stand-Alone Self-Attention (Ramachandran et al., NeurIPS 2019,
arXiv 1906.05909) lets every pixel attend over the k x k neighbourhood
centred on it, with logits ``q . k + q . r`` where ``r`` is a learned
relative embedding of the row and column offsets. The public ports
``unfold`` keys and values into ``(B, C, k*k, H, W)`` tensors, which costs
k^2 = 49 times the memory of the feature map and makes SASA impractical at
detection resolutions.

:func:`sasa_attention` computes the same result by looping over the k^2
offsets with shifted views of the unpadded keys and values. The only
k^2-sized tensor is the attention-probability map ``(B, heads, k*k, H, W)``,
which is ``head_dim`` times smaller than an unfolded key tensor. A custom
autograd function keeps ``q``, ``k``, ``v`` and the probabilities and
computes the gradients in the same offset loop, so no autograd graph over
k^2 intermediate tensors is built.

On CPU the loops run over chunks of rows small enough to stay in cache,
which is what makes the loop faster than ``unfold``, and the ``batch *
heads`` slices are split between worker threads, one intra-op thread
each: a thread never waits for another between two small ops, so the
layer stays fast when other processes share the cores.

Borders are masked: neighbours outside the image get a ``-inf`` logit, so
they take no part in the softmax (rather than being attended as the
projection of zero padding). Every pixel always has itself as a neighbour,
so no row of the softmax is empty.

The positional logit of head ``h`` splits that head's query in two halves:
the first half is dotted with the row-offset embedding and the second half
with the column-offset embedding (the paper's concatenation ``r = [r_row,
r_col]``, applied within each head, see :class:`SASAttention`).
"""
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

# On CPU the offset loops run over chunks whose query slice holds about
# this many elements (1 MiB in fp32), so that a chunk's queries, keys,
# values and logits stay close to the cache while the per-chunk Python
# overhead stays small. On a 2-core EPYC, 2**18 to 2**20 ran alike on the
# benchmark's layers and 2**16 or less was slower.
_CPU_CHUNK_NUMEL = 2**18

_Chunk = Tuple[slice, int, int]
_Offset = Tuple[int, slice, slice, slice, slice]


def _chunks(batch_heads: int, head_dim: int, height: int, width: int,
            device: torch.device) -> List[_Chunk]:
    """Split ``(batch * heads, rows)`` into blocks processed one at a time.

    Returns:
        list[tuple[slice, int, int]]: Slices over ``batch * heads`` and
        half-open row ranges ``[row_start, row_end)``.
    """
    if device.type != 'cpu':
        # GPU kernels are bandwidth-bound at any size; one chunk keeps the
        # number of kernel launches at its minimum.
        return [(slice(None), 0, height)]
    row_numel = head_dim * width
    if batch_heads * row_numel <= _CPU_CHUNK_NUMEL:
        rows = max(1, _CPU_CHUNK_NUMEL // (batch_heads * row_numel))
        return [(slice(None), start, min(height, start + rows))
                for start in range(0, height, rows)]
    group = max(1, _CPU_CHUNK_NUMEL // row_numel)
    rows = max(1, _CPU_CHUNK_NUMEL // (group * row_numel))
    return [(slice(first, min(batch_heads, first + group)), start,
             min(height, start + rows))
            for first in range(0, batch_heads, group)
            for start in range(0, height, rows)]


def _offsets(row_start: int, row_end: int, height: int, width: int,
             kernel_size: int) -> Iterator[_Offset]:
    """Yield the in-image part of every window offset for a row range.

    For offset ``(dy, dx)`` the query pixels ``(i, j)`` whose neighbour
    ``(i + dy, j + dx)`` lies inside the image form a rectangle; its rows
    are clipped to ``[row_start, row_end)``.

    Yields:
        tuple: ``(index, query_rows, key_rows, query_cols, key_cols)``
        where ``index = (dy + r) * k + (dx + r)`` and the row slices are
        absolute (subtract ``row_start`` to index a chunk).
    """
    radius = kernel_size // 2
    for dy in range(-radius, radius + 1):
        first, last = max(row_start, -dy), min(row_end, height - dy)
        if first >= last:
            continue
        q_rows, k_rows = slice(first, last), slice(first + dy, last + dy)
        for dx in range(-radius, radius + 1):
            if abs(dx) >= width:
                continue
            q_cols = slice(max(0, -dx), width - max(0, dx))
            k_cols = slice(max(0, dx), width - max(0, -dx))
            index = (dy + radius) * kernel_size + dx + radius
            yield index, q_rows, k_rows, q_cols, k_cols


def _shift_rows(rows: slice, start: int) -> slice:
    """Express an absolute row slice relative to a chunk's first row."""
    return slice(rows.start - start, rows.stop - start)


def _max_chunk_numel(chunks: List[_Chunk], q: Tensor) -> int:
    """Largest ``(group, head_dim, rows, width)`` slice among the chunks."""
    return max(q[group, :, start:end].numel() for group, start, end in chunks)


def _partitions(batch_heads: int, device: torch.device) -> List[slice]:
    """Contiguous ``batch * heads`` ranges, one per CPU worker thread."""
    if device.type != 'cpu':
        return [slice(0, batch_heads)]
    workers = max(1, min(torch.get_num_threads(), batch_heads))
    bounds = [i * batch_heads // workers for i in range(workers + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _run(work: Callable[[slice], None], parts: List[slice]) -> None:
    """Call ``work`` on every partition, on CPU one thread per partition.

    The partitions touch disjoint ``batch * heads`` slices, so they need
    no locking. The workers run their ops on one intra-op thread each and,
    like the autograd function's own thread, without grad mode (which is
    per thread); PyTorch's thread setting is restored afterwards.
    """
    if len(parts) == 1:
        work(parts[0])
        return

    def no_grad_work(part: slice) -> None:
        with torch.no_grad():
            work(part)

    threads = torch.get_num_threads()
    # New threads take this setting when they run their first op.
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            for _ in pool.map(no_grad_work, parts):
                pass
    finally:
        torch.set_num_threads(threads)


def _forward_part(q: Tensor, k: Tensor, v: Tensor, pos_row: Tensor,
                  pos_col: Tensor, out: Tensor, probs: Optional[Tensor],
                  kernel_size: int) -> None:
    """Attention for a ``(n, d, H, W)`` slice of ``batch * heads``.

    Writes ``out`` and, unless ``probs`` is None, the probabilities
    ``(n, k*k, H, W)``.
    """
    _, head_dim, height, width = q.shape
    window = kernel_size**2
    chunks = _chunks(q.shape[0], head_dim, height, width, q.device)
    max_numel = _max_chunk_numel(chunks, q)
    scratch = q.new_empty(max_numel)
    if probs is None:  # no backward: one chunk's worth is reused
        buffer = q.new_empty(max_numel // head_dim * window)
    for group, start, end in chunks:
        if probs is not None:
            logits = probs[group, :, start:end]
        else:
            shape = q[group, :, start:end].shape
            shape = (shape[0], window) + shape[2:]
            logits = buffer[:math.prod(shape)].view(shape)
        logits.fill_(float('-inf'))
        offsets = list(_offsets(start, end, height, width, kernel_size))
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            q_part = q[group, :, q_rows, q_cols]
            product = torch.mul(
                q_part, k[group, :, k_rows, k_cols],
                out=scratch[:q_part.numel()].view(q_part.shape))
            logits[:, index, _shift_rows(q_rows, start),
                   q_cols] = product.sum(dim=1)
        grid = logits.unflatten(1, (kernel_size, kernel_size))
        grid.add_(pos_row[group, :, start:end].unsqueeze(2))
        grid.add_(pos_col[group, :, start:end].unsqueeze(1))
        # In-place softmax over the window; -inf (outside) becomes 0.
        logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
        logits.div_(logits.sum(dim=1, keepdim=True))
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            out[group, :, q_rows, q_cols].addcmul_(
                logits[:, index:index + 1, _shift_rows(q_rows, start),
                       q_cols], v[group, :, k_rows, k_cols])


def _backward_part(q: Tensor, k: Tensor, v: Tensor, probs: Tensor,
                   grad_out: Tensor, grad_q: Optional[Tensor],
                   grad_k: Optional[Tensor], grad_v: Optional[Tensor],
                   grad_pos_row: Optional[Tensor],
                   grad_pos_col: Optional[Tensor], kernel_size: int) -> None:
    """Gradients for a ``(n, d, H, W)`` slice of ``batch * heads``.

    Accumulates into the ``grad_*`` slices that are not None; the
    positional-logit gradients ``(n, k, H, W)`` are written whenever the
    logits need a gradient (``grad_pos_row`` is not None).
    """
    _, head_dim, height, width = q.shape
    chunks = _chunks(q.shape[0], head_dim, height, width, q.device)
    max_numel = _max_chunk_numel(chunks, q)
    scratch = q.new_empty(max_numel)
    need_logits = grad_pos_row is not None
    if need_logits:
        logit_buffer = q.new_empty(max_numel // head_dim * kernel_size**2)
    for group, start, end in chunks:
        p = probs[group, :, start:end]
        offsets = list(_offsets(start, end, height, width, kernel_size))
        if need_logits:
            # d(loss)/d(probs) for every offset, then the softmax
            # backward: dlogits = p * (dprobs - sum(p * dprobs)).
            grad_logits = logit_buffer[:p.numel()].view(p.shape)
            grad_logits.zero_()
            for index, q_rows, k_rows, q_cols, k_cols in offsets:
                g_part = grad_out[group, :, q_rows, q_cols]
                product = torch.mul(
                    g_part, v[group, :, k_rows, k_cols],
                    out=scratch[:g_part.numel()].view(g_part.shape))
                grad_logits[:, index, _shift_rows(q_rows, start),
                            q_cols] = product.sum(dim=1)
            expected = (grad_logits * p).sum(dim=1, keepdim=True)
            grad_logits.sub_(expected).mul_(p)
            grid = grad_logits.unflatten(1, (kernel_size, kernel_size))
            torch.sum(grid, dim=2, out=grad_pos_row[group, :, start:end])
            torch.sum(grid, dim=1, out=grad_pos_col[group, :, start:end])
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            rows = _shift_rows(q_rows, start)
            if need_logits:
                weight = grad_logits[:, index:index + 1, rows, q_cols]
                if grad_q is not None:
                    grad_q[group, :, q_rows, q_cols].addcmul_(
                        weight, k[group, :, k_rows, k_cols])
                if grad_k is not None:
                    grad_k[group, :, k_rows, k_cols].addcmul_(
                        weight, q[group, :, q_rows, q_cols])
            if grad_v is not None:
                grad_v[group, :, k_rows, k_cols].addcmul_(
                    p[:, index:index + 1, rows, q_cols],
                    grad_out[group, :, q_rows, q_cols])


def _part(tensor: Optional[Tensor], part: slice) -> Optional[Tensor]:
    return None if tensor is None else tensor[part]


class _SASAFunction(torch.autograd.Function):
    """Autograd function of :func:`sasa_attention` (see the module doc)."""

    @staticmethod
    def forward(ctx: FunctionCtx, query: Tensor, key: Tensor, value: Tensor,
                rel_h: Tensor, rel_w: Tensor) -> Tensor:
        batch, heads, head_dim, height, width = query.shape
        kernel_size = rel_h.shape[0]
        half = head_dim // 2
        shape = (batch * heads, head_dim, height, width)
        q, k, v = query.view(shape), key.view(shape), value.view(shape)

        # Positional logits: one value per row offset and per column offset,
        # broadcast to the k x k window inside the chunk loop.
        pos_row = _positional_logits(query[:, :, :half], rel_h)
        pos_col = _positional_logits(query[:, :, half:], rel_w)
        out = torch.zeros_like(q)
        # The probabilities are kept for backward only when it will come.
        probs = None
        if any(ctx.needs_input_grad):
            probs = q.new_empty(shape[0], kernel_size**2, height, width)

        def work(part: slice) -> None:
            _forward_part(q[part], k[part], v[part], pos_row[part],
                          pos_col[part], out[part], _part(probs, part),
                          kernel_size)

        _run(work, _partitions(shape[0], q.device))
        if probs is not None:
            ctx.save_for_backward(query, key, value, rel_h, rel_w, probs)
        return out.view_as(query)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple:
        query, key, value, rel_h, rel_w, probs = ctx.saved_tensors
        batch, heads, head_dim, height, width = query.shape
        kernel_size = rel_h.shape[0]
        half = head_dim // 2
        shape = (batch * heads, head_dim, height, width)
        q, k, v = query.view(shape), key.view(shape), value.view(shape)
        g = grad_out.contiguous().view(shape)
        need_q, need_k, need_v, need_rh, need_rw = ctx.needs_input_grad

        grad_q = torch.zeros_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        grad_pos_row = grad_pos_col = None
        if need_q or need_k or need_rh or need_rw:
            grad_pos_row = q.new_empty(shape[0], kernel_size, height, width)
            grad_pos_col = torch.empty_like(grad_pos_row)

        def work(part: slice) -> None:
            _backward_part(q[part], k[part], v[part], probs[part], g[part],
                           _part(grad_q, part), _part(grad_k, part),
                           _part(grad_v, part), _part(grad_pos_row, part),
                           _part(grad_pos_col, part), kernel_size)

        _run(work, _partitions(shape[0], q.device))

        grad_rh = grad_rw = None
        if grad_pos_row is not None:
            # Back through the positional logits, as (k x pixels) matmuls.
            flat = (batch, heads, kernel_size, height * width)
            grad_pos_row = grad_pos_row.view(flat)
            grad_pos_col = grad_pos_col.view(flat)
        if need_q:
            grad_q = grad_q.view_as(query)
            for part, grad_pos, table in ((slice(None, half), grad_pos_row,
                                           rel_h),
                                          (slice(half, None), grad_pos_col,
                                           rel_w)):
                grad_q[:, :, part] += torch.matmul(
                    table.permute(1, 2, 0), grad_pos).view(
                        batch, heads, half, height, width)
        if need_rh:
            grad_rh = _table_grad(grad_pos_row, query[:, :, :half])
        if need_rw:
            grad_rw = _table_grad(grad_pos_col, query[:, :, half:])
        grad_k = grad_k.view_as(key) if need_k else None
        grad_v = grad_v.view_as(value) if need_v else None
        return grad_q, grad_k, grad_v, grad_rh, grad_rw


def _positional_logits(query_part: Tensor, table: Tensor) -> Tensor:
    """``q_part . table[offset]`` for every pixel and offset.

    Args:
        query_part (Tensor): ``(B, heads, d / 2, H, W)`` half of the queries.
        table (Tensor): ``(k, heads, d / 2)`` offset embeddings.

    Returns:
        Tensor: ``(B * heads, k, H, W)``.
    """
    batch, heads, half, height, width = query_part.shape
    logits = torch.matmul(
        table.transpose(0, 1),
        query_part.reshape(batch, heads, half, height * width))
    return logits.view(batch * heads, -1, height, width)


def _table_grad(grad_pos: Tensor, query_part: Tensor) -> Tensor:
    """Gradient of an offset table from ``(B, heads, k, H*W)`` logit grads.
    """
    batch, heads, half, height, width = query_part.shape
    grad = torch.matmul(
        grad_pos,
        query_part.reshape(batch, heads, half, height * width).transpose(
            -1, -2))  # (B, heads, k, d / 2)
    return grad.sum(0).transpose(0, 1)


def sasa_attention(query: Tensor, key: Tensor, value: Tensor, rel_h: Tensor,
                   rel_w: Tensor) -> Tensor:
    """SASA local attention over the k x k window centred on each pixel.

    ``out[b, h, :, i, j] = sum_{(a, c) in window} softmax_{(a, c)}(
    q[i, j] . k[a, c] + q[i, j, :d/2] . rel_h[a - i] + q[i, j, d/2:] .
    rel_w[c - j]) v[a, c]``, where neighbours outside the image are left
    out. Apply any logit scale to ``query`` beforehand.

    Args:
        query (Tensor): Queries of shape ``(B, heads, head_dim, H, W)``.
        key (Tensor): Keys, same shape as ``query``.
        value (Tensor): Values, same shape as ``query``.
        rel_h (Tensor): Row-offset embeddings ``(k, heads, head_dim // 2)``;
            row ``m`` belongs to offset ``m - k // 2``.
        rel_w (Tensor): Column-offset embeddings, same shape as ``rel_h``.

    Returns:
        Tensor: The attention output, same shape as ``query``.
    """
    if query.dim() != 5:
        raise ValueError('sasa_attention expects (B, heads, head_dim, H, W) '
                         f'queries, got shape {tuple(query.shape)}')
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(
            'sasa_attention needs query, key and value of one shape, got '
            f'{tuple(query.shape)}, {tuple(key.shape)}, '
            f'{tuple(value.shape)}')
    kernel_size = rel_h.shape[0]
    _, heads, head_dim, _, _ = query.shape
    expected = (kernel_size, heads, head_dim // 2)
    if (head_dim % 2 or tuple(rel_h.shape) != expected
            or tuple(rel_w.shape) != expected):
        raise ValueError(
            f'sasa_attention needs rel_h and rel_w of shape {expected} '
            f'(even head_dim), got {tuple(rel_h.shape)} and '
            f'{tuple(rel_w.shape)} for head_dim {head_dim}')
    if kernel_size % 2 == 0:
        raise ValueError(
            f'sasa_attention needs an odd window, got {kernel_size}')
    rel_h = rel_h.to(query.dtype)
    rel_w = rel_w.to(query.dtype)
    return _SASAFunction.apply(query.contiguous(), key.contiguous(),
                               value.contiguous(), rel_h, rel_w)
