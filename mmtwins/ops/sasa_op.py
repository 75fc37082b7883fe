"""Exact k x k local self-attention of SASA as one registered op.

Stand-Alone Self-Attention (Ramachandran et al., NeurIPS 2019,
arXiv 1906.05909) lets every pixel attend over the k x k neighbourhood
centred on it, with logits ``q . k + q . r`` where ``r`` is a learned
relative embedding of the row and column offsets. The public ports
``unfold`` keys and values into ``(B, C, k*k, H, W)`` tensors, which costs
k^2 = 49 times the memory of the feature map and makes SASA impractical at
detection resolutions.

The attention is the custom op ``torch.ops.mmtwins.sasa_attention``
(``torch.library``), so that ``torch.compile`` keeps it inside one graph and
``torch.export`` records it as one node:

- forward returns the output and the per-pixel log-sum-exp of the logits
  (the only thing kept for backward besides the inputs and output, as in
  flash attention); a fake implementation gives both shapes for tracing;
- backward is the op ``mmtwins::sasa_attention_backward``; it recomputes
  the probabilities chunk by chunk from the log-sum-exp;
- for ``torch.export``-based ONNX export a decomposition into standard ops
  (a one-hot convolution gathering the k^2 neighbours, a masked softmax)
  is registered, see :mod:`.sasa_export`.

Implementations, one per device, all exact:

- CPU: the fused C++ kernel of :mod:`.sasa_cpu` (built on first use),
  which computes one image row's logits, softmax and weighted values in
  cache on ATen's intra-op threads;
- CUDA with Triton: fused Triton kernels (:mod:`.sasa_triton`, one launch
  per pass instead of one per offset);
- anywhere else, and as the fallback when neither kernel is available: the
  offset loop below. It loops over the k^2 offsets with shifted views of
  the unpadded keys and values, so there is no k^2-fold copy of them; on
  CPU it walks over chunks of rows small enough to stay in cache, the only
  k^2-sized tensor being one chunk's logits.

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
from types import ModuleType
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import sasa_export

# On CPU the offset loops run over chunks whose query slice holds about
# this many elements (256 KiB in fp32), so that a chunk's queries, keys,
# values and logits stay close to the cache while the per-chunk Python
# overhead stays small.
_CPU_CHUNK_NUMEL = 2**16

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
        where ``index = (dy + r) * k + (dx + r)``; the query rows are
        relative to ``row_start``, the key rows absolute.
    """
    radius = kernel_size // 2
    for dy in range(-radius, radius + 1):
        first, last = max(row_start, -dy), min(row_end, height - dy)
        if first >= last:
            continue
        q_rows = slice(first - row_start, last - row_start)
        k_rows = slice(first + dy, last + dy)
        for dx in range(-radius, radius + 1):
            if abs(dx) >= width:
                continue
            q_cols = slice(max(0, -dx), width - max(0, dx))
            k_cols = slice(max(0, dx), width - max(0, -dx))
            index = (dy + radius) * kernel_size + dx + radius
            yield index, q_rows, k_rows, q_cols, k_cols


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


class _Kernel:
    """The chunked offset loop shared by forward and backward.

    Holds ``(B * heads, d, H, W)`` views of the queries and keys, the
    positional logits and two scratch buffers sized for the largest chunk.
    """

    def __init__(self, q: Tensor, k: Tensor, pos_row: Tensor,
                 pos_col: Tensor, kernel_size: int) -> None:
        self.q, self.k = q, k
        self.pos_row, self.pos_col = pos_row, pos_col
        self.kernel_size = kernel_size
        batch_heads, head_dim, self.height, self.width = q.shape
        self.chunks = _chunks(batch_heads, head_dim, self.height,
                              self.width, q.device)
        max_numel = max(q[group, :, start:end].numel()
                        for group, start, end in self.chunks)
        self.scratch = q.new_empty(max_numel)
        self.logit_buffer = q.new_empty(max_numel // head_dim *
                                        kernel_size**2)

    def offsets(self, start: int, end: int) -> List[_Offset]:
        return list(
            _offsets(start, end, self.height, self.width, self.kernel_size))

    def dot(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """``out = sum_d a * b`` over dim 1, through the scratch buffer."""
        product = torch.mul(a, b, out=self.scratch[:a.numel()].view(a.shape))
        torch.sum(product, dim=1, out=out)

    def logits(self, group: slice, start: int, end: int,
               offsets: List[_Offset]) -> Tensor:
        """The chunk's ``(n, k*k, rows, W)`` logits; ``-inf`` outside."""
        q, k = self.q, self.k
        shape = q[group, :, start:end].shape
        shape = (shape[0], self.kernel_size**2) + shape[2:]
        logits = self.logit_buffer[:math.prod(shape)].view(shape)
        logits.fill_(float('-inf'))
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            self.dot(q[group, :, start:end][:, :, q_rows, q_cols],
                     k[group, :, k_rows, k_cols],
                     logits[:, index, q_rows, q_cols])
        grid = logits.unflatten(1, (self.kernel_size, self.kernel_size))
        grid.add_(self.pos_row[group, :, start:end].unsqueeze(2))
        grid.add_(self.pos_col[group, :, start:end].unsqueeze(1))
        return logits


def _split(tensor: Tensor) -> Tensor:
    """``(B, heads, ...)`` -> ``(B * heads, ...)`` view."""
    return tensor.view((-1, ) + tuple(tensor.shape[2:]))


def _positional(query: Tensor, rel_h: Tensor,
                rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    half = query.shape[2] // 2
    return (_positional_logits(query[:, :, :half], rel_h),
            _positional_logits(query[:, :, half:], rel_w))


def _forward_loop(query: Tensor, key: Tensor, value: Tensor, rel_h: Tensor,
                  rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """The exact offset-loop forward; see :func:`sasa_attention`."""
    batch, heads, _, height, width = query.shape
    out = torch.zeros_like(query)
    lse = query.new_zeros(batch, heads, height, width)
    if query.numel() == 0:
        return out, lse
    q, k, v, o, lse_flat = (_split(t)
                              for t in (query, key, value, out, lse))
    pos_row, pos_col = _positional(query, rel_h, rel_w)
    kernel = _Kernel(q, k, pos_row, pos_col, rel_h.shape[0])
    for group, start, end in kernel.chunks:
        offsets = kernel.offsets(start, end)
        probs = kernel.logits(group, start, end, offsets)
        # In-place softmax over the window; -inf (outside) becomes 0.
        peak = probs.amax(dim=1, keepdim=True)
        probs.sub_(peak).exp_()
        total = probs.sum(dim=1, keepdim=True)
        probs.div_(total)
        lse_flat[group, start:end] = (peak + total.log_()).squeeze(1)
        o_chunk, v_group = o[group, :, start:end], v[group]
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            o_chunk[:, :, q_rows, q_cols].addcmul_(
                probs[:, index:index + 1, q_rows, q_cols],
                v_group[:, :, k_rows, k_cols])
    return out, lse


def _backward_loop(grad_out: Tensor, query: Tensor, key: Tensor,
                   value: Tensor, rel_h: Tensor, rel_w: Tensor, out: Tensor,
                   lse: Tensor,
                   output_mask: Sequence[bool]) -> List[Optional[Tensor]]:
    """Gradients of the offset loop; None where ``output_mask`` is False.
    """
    need_q, need_k, need_v, need_rh, need_rw = output_mask
    size = rel_h.shape[0]
    grad_q = torch.zeros_like(query) if need_q else None
    grad_k = torch.zeros_like(key) if need_k else None
    grad_v = torch.zeros_like(value) if need_v else None
    grad_rh = torch.zeros_like(rel_h) if need_rh else None
    grad_rw = torch.zeros_like(rel_w) if need_rw else None
    grads = [grad_q, grad_k, grad_v, grad_rh, grad_rw]
    need_logits = need_q or need_k or need_rh or need_rw
    if query.numel() == 0 or not (need_logits or need_v):
        return grads

    q, k, v, g, lse_flat = (_split(t) for t in (query, key, value,
                                                 grad_out, lse))
    pos_row, pos_col = _positional(query, rel_h, rel_w)
    gq, gk, gv = (None if t is None else _split(t)
                  for t in (grad_q, grad_k, grad_v))
    grad_pos_row = grad_pos_col = row_term = None
    if need_logits:
        # sum_o p_o (g . v_o) = g . out: the softmax backward's row term.
        row_term = _split((grad_out * out).sum(dim=2))
        grad_pos_row = pos_row.new_empty(pos_row.shape)
        grad_pos_col = torch.empty_like(grad_pos_row)
    kernel = _Kernel(q, k, pos_row, pos_col, size)
    if need_logits:
        grad_buffer = torch.empty_like(kernel.logit_buffer)
    for group, start, end in kernel.chunks:
        offsets = kernel.offsets(start, end)
        probs = kernel.logits(group, start, end, offsets)
        probs.sub_(lse_flat[group, None, start:end]).exp_()
        g_chunk = g[group, :, start:end]
        q_chunk = q[group, :, start:end]
        k_group, v_group = k[group], v[group]
        if need_logits:
            # d(loss)/d(logits) = p * (g . v_o - g . out)
            grad_logits = grad_buffer[:probs.numel()].view(probs.shape)
            grad_logits.zero_()
            for index, q_rows, k_rows, q_cols, k_cols in offsets:
                kernel.dot(g_chunk[:, :, q_rows, q_cols],
                           v_group[:, :, k_rows, k_cols],
                           grad_logits[:, index, q_rows, q_cols])
            grad_logits.sub_(row_term[group, None, start:end]).mul_(probs)
            grid = grad_logits.unflatten(1, (size, size))
            torch.sum(grid, dim=2, out=grad_pos_row[group, :, start:end])
            torch.sum(grid, dim=1, out=grad_pos_col[group, :, start:end])
        gq_chunk = None if gq is None else gq[group, :, start:end]
        gk_group = None if gk is None else gk[group]
        gv_group = None if gv is None else gv[group]
        for index, q_rows, k_rows, q_cols, k_cols in offsets:
            if need_logits:
                weight = grad_logits[:, index:index + 1, q_rows, q_cols]
                if gq_chunk is not None:
                    gq_chunk[:, :, q_rows, q_cols].addcmul_(
                        weight, k_group[:, :, k_rows, k_cols])
                if gk_group is not None:
                    gk_group[:, :, k_rows, k_cols].addcmul_(
                        weight, q_chunk[:, :, q_rows, q_cols])
            if gv_group is not None:
                gv_group[:, :, k_rows, k_cols].addcmul_(
                    probs[:, index:index + 1, q_rows, q_cols],
                    g_chunk[:, :, q_rows, q_cols])

    if need_logits:
        _positional_backward(query, rel_h, rel_w, grad_pos_row,
                             grad_pos_col, grads)
    return grads


def _positional_backward(query: Tensor, rel_h: Tensor, rel_w: Tensor,
                         grad_pos_row: Tensor, grad_pos_col: Tensor,
                         grads: List[Optional[Tensor]],
                         query_done: bool = False) -> None:
    """Add the gradients that flow through the positional logits.

    ``grad_pos_*`` are ``(B * heads, k, H, W)``; ``grads`` is
    ``[grad_q, grad_k, grad_v, grad_rh, grad_rw]`` (None where not needed);
    ``query_done``: ``grad_q`` has its positional part already.
    """
    batch, heads, head_dim, height, width = query.shape
    half = head_dim // 2
    flat = (batch, heads, rel_h.shape[0], height * width)
    grad_q, _, _, grad_rh, grad_rw = grads
    if query_done:
        grad_q = None
    for part, grad_pos, table, grad_table in (
            (slice(None, half), grad_pos_row, rel_h, grad_rh),
            (slice(half, None), grad_pos_col, rel_w, grad_rw)):
        grad_pos = grad_pos.view(flat)
        if grad_q is not None:
            grad_q[:, :, part] += torch.matmul(
                table.permute(1, 2, 0), grad_pos).view(
                    batch, heads, half, height, width)
        if grad_table is not None:
            query_part = query[:, :, part].reshape(batch, heads, half,
                                                   height * width)
            # (B, heads, k, d / 2) summed over the batch.
            grad = torch.matmul(grad_pos, query_part.transpose(-1, -2))
            grad_table += grad.sum(0).transpose(0, 1)


def _fused_kernels(query: Tensor) -> Optional[ModuleType]:
    """The fused kernels for ``query``'s device, or None for the loop.

    CPU: the C++ kernel (:mod:`.sasa_cpu`, built on first use); CUDA:
    :mod:`.sasa_triton` when Triton is installed. Both modules offer
    ``forward`` and ``backward`` with the same arguments.
    """
    if query.device.type == 'cpu':
        from . import sasa_cpu
        return sasa_cpu if sasa_cpu.kernel() is not None else None
    if query.device.type == 'cuda':
        from . import sasa_triton
        return sasa_triton if sasa_triton.available() else None
    return None


def _positional_inputs(query: Tensor, rel_h: Tensor, rel_w: Tensor,
                       kernels: ModuleType) -> Tuple[Tensor, Tensor]:
    """What ``kernels`` take for the positional logits: the offset
    embeddings for the CPU kernel (it computes the logits row by row), the
    contiguous ``(B * heads, k, H, W)`` logits for the Triton kernels."""
    from . import sasa_cpu
    if kernels is sasa_cpu:
        return rel_h, rel_w
    pos_row, pos_col = _positional(query, rel_h, rel_w)
    return pos_row.contiguous(), pos_col.contiguous()


def _forward_fused(query: Tensor, key: Tensor, value: Tensor, rel_h: Tensor,
                   rel_w: Tensor,
                   kernels: ModuleType) -> Tuple[Tensor, Tensor]:
    """Forward through fused kernels (:mod:`.sasa_cpu`,
    :mod:`.sasa_triton`)."""
    batch, heads, _, height, width = query.shape
    if query.numel() == 0:
        return (torch.zeros_like(query),
                query.new_zeros(batch, heads, height, width))
    out, lse = kernels.forward(
        *(_split(t) for t in (query, key, value)),
        *_positional_inputs(query, rel_h, rel_w, kernels))
    return out.view_as(query), lse.view(batch, heads, height, width)


def _backward_fused(grad_out: Tensor, query: Tensor, key: Tensor,
                    value: Tensor, rel_h: Tensor, rel_w: Tensor, out: Tensor,
                    lse: Tensor, output_mask: Sequence[bool],
                    kernels: ModuleType) -> List[Optional[Tensor]]:
    """Backward through fused kernels; None where ``output_mask`` is False.
    """
    if query.numel() == 0:
        grads = [torch.zeros_like(t)
                 for t in (query, key, value, rel_h, rel_w)]
        return [g if need else None for g, need in zip(grads, output_mask)]
    need_q, need_k, need_v, need_rh, need_rw = output_mask
    # The CPU kernel's query gradient includes the positional part; the
    # Triton kernels' is the content part, completed here.
    from . import sasa_cpu
    query_done = kernels is sasa_cpu
    need_pos = need_rh or need_rw or (need_q and not query_done)
    grad_q, grad_k, grad_v, grad_pos_row, grad_pos_col = kernels.backward(
        *(_split(t) for t in (grad_out, query, key, value)),
        *_positional_inputs(query, rel_h, rel_w, kernels), _split(out),
        _split(lse), (need_q, need_k, need_v, need_pos))
    grad_q, grad_k, grad_v, grad_pos_row, grad_pos_col = (
        grad.to(query.dtype)
        for grad in (grad_q, grad_k, grad_v, grad_pos_row, grad_pos_col))
    grads = [
        grad.view_as(like) if need else None
        for grad, like, need in ((grad_q, query, need_q),
                                 (grad_k, key, need_k),
                                 (grad_v, value, need_v))
    ]
    grads += [torch.zeros_like(rel_h) if need_rh else None,
              torch.zeros_like(rel_w) if need_rw else None]
    if need_pos:
        _positional_backward(query, rel_h, rel_w, grad_pos_row,
                             grad_pos_col, grads, query_done)
    return grads


@torch.library.custom_op('mmtwins::sasa_attention', mutates_args=())
def sasa_attention_op(query: Tensor, key: Tensor, value: Tensor,
                      rel_h: Tensor, rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    """Output ``(B, heads, d, H, W)`` and log-sum-exp ``(B, heads, H, W)``.

    The arguments are those of :func:`sasa_attention`, validated there.
    """
    query, key, value = (t.contiguous() for t in (query, key, value))
    kernels = _fused_kernels(query)
    if kernels is not None:
        return _forward_fused(query, key, value, rel_h, rel_w, kernels)
    return _forward_loop(query, key, value, rel_h, rel_w)


@sasa_attention_op.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, rel_h: Tensor,
      rel_w: Tensor) -> Tuple[Tensor, Tensor]:
    batch, heads, _, height, width = query.shape
    return (query.new_empty(query.shape),
            query.new_empty(batch, heads, height, width))


@torch.library.custom_op('mmtwins::sasa_attention_backward', mutates_args=())
def sasa_attention_backward_op(
        grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor,
        rel_h: Tensor, rel_w: Tensor, out: Tensor, lse: Tensor,
        output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor, Tensor,
                                          Tensor]:
    """Gradients for ``query, key, value, rel_h, rel_w``.

    An input whose ``output_mask`` entry is False gets an empty ``(0,)``
    tensor instead of its gradient (custom ops cannot return None).
    """
    args = [t.contiguous() for t in (grad_out, query, key, value)]
    kernels = _fused_kernels(query)
    if kernels is not None:
        grads = _backward_fused(*args, rel_h, rel_w, out.contiguous(),
                                lse.contiguous(), output_mask, kernels)
    else:
        grads = _backward_loop(*args, rel_h, rel_w, out.contiguous(),
                               lse.contiguous(), output_mask)
    return tuple(
        query.new_empty(0) if grad is None else grad for grad in grads)


@sasa_attention_backward_op.register_fake
def _(grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor,
      rel_h: Tensor, rel_w: Tensor, out: Tensor, lse: Tensor,
      output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor, Tensor,
                                        Tensor]:
    return tuple(
        tensor.new_empty(tensor.shape if need else (0, ))
        for tensor, need in zip((query, key, value, rel_h, rel_w),
                                output_mask))


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    out, lse = output
    ctx.save_for_backward(*inputs, out, lse)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: Tensor, grad_lse: Optional[Tensor]) -> tuple:
    mask = [bool(need) for need in ctx.needs_input_grad]
    grads = torch.ops.mmtwins.sasa_attention_backward(
        grad_out, *ctx.saved_tensors, mask)
    return tuple(grad if need else None for grad, need in zip(grads, mask))


sasa_attention_op.register_autograd(_backward, setup_context=_setup_context)


def sasa_attention(query: Tensor, key: Tensor, value: Tensor, rel_h: Tensor,
                   rel_w: Tensor) -> Tensor:
    """SASA local attention over the k x k window centred on each pixel.

    ``out[b, h, :, i, j] = sum_{(a, c) in window} softmax_{(a, c)}(
    q[i, j] . k[a, c] + q[i, j, :d/2] . rel_h[a - i] + q[i, j, d/2:] .
    rel_w[c - j]) v[a, c]``, where neighbours outside the image are left
    out. Apply any logit scale to ``query`` beforehand. Runs the op
    ``torch.ops.mmtwins.sasa_attention`` (module doc).

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
    if not (query.dtype == key.dtype == value.dtype
            and query.dtype.is_floating_point):
        raise ValueError(
            'sasa_attention needs floating-point query, key and value of one '
            f'dtype, got {query.dtype}, {key.dtype}, {value.dtype}')
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
    out, _ = torch.ops.mmtwins.sasa_attention(query, key, value,
                                              rel_h.to(query.dtype),
                                              rel_w.to(query.dtype))
    return out


sasa_export.register()
