// Fused CPU kernel of SASA's k x k local attention (mmtwins::sasa_attention).
//
// The math is that of mmtwins/models/layers/sasa_ops.py (its module
// docstring): for pixel (i, j) of slice n = (batch, head) and window offset
// o = (a, b), a = dy + r, b = dx + r, r = k / 2,
//
//   logit[o] = sum_c q[c, i, j] k[c, i + dy, j + dx] + pos_row[a, i, j]
//              + pos_col[b, i, j]
//   out[c, i, j] = sum_o softmax_o(logit)[o] v[c, i + dy, j + dx]
//
// over the offsets whose neighbour lies inside the image (the others are
// masked out, never read). Tensors are (N, D, H, W) planes with
// N = batch * heads, so every inner loop runs along a contiguous image row
// and the compiler vectorises it; one row's k*k logits stay in cache, so
// the q . k products are never written to memory (the Python offset loop
// writes each of them). Forward keeps only the log-sum-exp; backward
// recomputes the probabilities from it.
//
// Threads: ATen's intra-op pool (at::parallel_for), i.e. as many as
// torch.get_num_threads(). Forward splits the N * H rows; backward splits
// the N slices, because a row's key and value gradients land on k rows.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp(x) for the softmax, where x = logit - max <= 0. In double it is
// std::exp; in float a Cephes-style polynomial (about 1 ulp) that the
// compiler vectorises, unlike the libm call.
inline double softmax_exp(double x) { return std::exp(x); }

inline float softmax_exp(float x) {
  x = x < -87.0f ? -87.0f : x;  // keeps 2^n a normal number
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Sizes of one call, and the in-image column range of every offset.
struct Geometry {
  int64_t slices, dim, height, width, size, radius, plane;
  std::vector<int64_t> first, last;  // per column offset b: [first, last)

  Geometry(const at::Tensor& q, int64_t kernel_size)
      : slices(q.size(0)), dim(q.size(1)), height(q.size(2)),
        width(q.size(3)), size(kernel_size), radius(kernel_size / 2),
        plane(q.size(2) * q.size(3)), first(kernel_size), last(kernel_size) {
    for (int64_t b = 0; b < size; ++b) {
      const int64_t dx = b - radius;
      first[b] = std::max<int64_t>(0, -dx);
      last[b] = std::min<int64_t>(width, width - dx);
    }
  }
  bool row_inside(int64_t i, int64_t a) const {
    const int64_t row = i + a - radius;
    return row >= 0 && row < height;
  }
};

// One image row's logits (size * size rows of `width`, in-image entries
// only) of slice pointers q, k (already offset to slice n).
template <typename scalar_t, typename acc_t>
void row_logits(const Geometry& g, const scalar_t* q, const scalar_t* k,
                const scalar_t* pos_row, const scalar_t* pos_col, int64_t i,
                acc_t* logits) {
  const int64_t W = g.width;
  for (int64_t a = 0; a < g.size; ++a) {
    if (!g.row_inside(i, a)) continue;
    const int64_t key_row = (i + a - g.radius) * W;
    const scalar_t* pr = pos_row + a * g.plane + i * W;
    for (int64_t b = 0; b < g.size; ++b) {
      const int64_t j0 = g.first[b], j1 = g.last[b], dx = b - g.radius;
      if (j0 >= j1) continue;
      acc_t* out = logits + (a * g.size + b) * W;
      const scalar_t* pc = pos_col + b * g.plane + i * W;
      for (int64_t j = j0; j < j1; ++j)
        out[j] = static_cast<acc_t>(pr[j]) + static_cast<acc_t>(pc[j]);
      for (int64_t c = 0; c < g.dim; ++c) {
        const scalar_t* qc = q + c * g.plane + i * W;
        const scalar_t* kc = k + c * g.plane + key_row + dx;
        for (int64_t j = j0; j < j1; ++j)
          out[j] += static_cast<acc_t>(qc[j]) * static_cast<acc_t>(kc[j]);
      }
    }
  }
}

// Calls f(o, a, dx, j0, j1) for every offset with an in-image neighbour.
template <typename F>
inline void for_each_offset(const Geometry& g, int64_t i, const F& f) {
  for (int64_t a = 0; a < g.size; ++a) {
    if (!g.row_inside(i, a)) continue;
    for (int64_t b = 0; b < g.size; ++b) {
      if (g.first[b] >= g.last[b]) continue;
      f(a * g.size + b, a, b - g.radius, g.first[b], g.last[b]);
    }
  }
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& q_t, const at::Tensor& k_t,
                    const at::Tensor& v_t, const at::Tensor& pr_t,
                    const at::Tensor& pc_t, at::Tensor& out_t,
                    at::Tensor& lse_t, int64_t kernel_size) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g(q_t, kernel_size);
  const int64_t W = g.width, window = g.size * g.size;
  const int64_t centre = g.radius * g.size + g.radius;
  const scalar_t *q = q_t.data_ptr<scalar_t>(), *k = k_t.data_ptr<scalar_t>(),
                 *v = v_t.data_ptr<scalar_t>(),
                 *pr = pr_t.data_ptr<scalar_t>(),
                 *pc = pc_t.data_ptr<scalar_t>();
  scalar_t *out = out_t.data_ptr<scalar_t>(), *lse = lse_t.data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, 4096 / (g.dim * W * window + 1));
  at::parallel_for(0, g.slices * g.height, grain, [&](int64_t begin,
                                                      int64_t end) {
    std::vector<acc_t> logits(window * W), acc(g.dim * W), peak(W), total(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.height, i = row % g.height;
      const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
      row_logits(g, q + slice, k + slice, pr + table, pc + table, i,
                 logits.data());
      // Softmax over the in-image offsets; the centre is always inside.
      std::copy_n(logits.data() + centre * W, W, peak.data());
      for_each_offset(g, i, [&](int64_t o, int64_t, int64_t, int64_t j0,
                                int64_t j1) {
        const acc_t* l = logits.data() + o * W;
        for (int64_t j = j0; j < j1; ++j) peak[j] = std::max(peak[j], l[j]);
      });
      std::fill(total.begin(), total.end(), acc_t(0));
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for_each_offset(g, i, [&](int64_t o, int64_t a, int64_t dx, int64_t j0,
                                int64_t j1) {
        acc_t* p = logits.data() + o * W;
        for (int64_t j = j0; j < j1; ++j) {
          p[j] = softmax_exp(p[j] - peak[j]);
          total[j] += p[j];
        }
        const int64_t value_row = (i + a - g.radius) * W + dx;
        for (int64_t c = 0; c < g.dim; ++c) {
          const scalar_t* vc = v + slice + c * g.plane + value_row;
          acc_t* ac = acc.data() + c * W;
          for (int64_t j = j0; j < j1; ++j)
            ac[j] += p[j] * static_cast<acc_t>(vc[j]);
        }
      });
      for (int64_t c = 0; c < g.dim; ++c) {
        scalar_t* oc = out + slice + c * g.plane + i * W;
        const acc_t* ac = acc.data() + c * W;
        for (int64_t j = 0; j < W; ++j)
          oc[j] = static_cast<scalar_t>(ac[j] / total[j]);
      }
      scalar_t* lse_row = lse + n * g.plane + i * W;
      for (int64_t j = 0; j < W; ++j)
        lse_row[j] = static_cast<scalar_t>(peak[j] + std::log(total[j]));
    }
  });
}

template <typename scalar_t>
void backward_kernel(const at::Tensor& g_t, const at::Tensor& q_t,
                     const at::Tensor& k_t, const at::Tensor& v_t,
                     const at::Tensor& pr_t, const at::Tensor& pc_t,
                     const at::Tensor& out_t, const at::Tensor& lse_t,
                     std::vector<at::Tensor>& grads, int64_t kernel_size,
                     bool need_q, bool need_k, bool need_v, bool need_pos) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry geo(q_t, kernel_size);
  const int64_t W = geo.width, window = geo.size * geo.size;
  const bool need_logits = need_q || need_k || need_pos;
  const scalar_t *go = g_t.data_ptr<scalar_t>(), *q = q_t.data_ptr<scalar_t>(),
                 *k = k_t.data_ptr<scalar_t>(), *v = v_t.data_ptr<scalar_t>(),
                 *pr = pr_t.data_ptr<scalar_t>(),
                 *pc = pc_t.data_ptr<scalar_t>(),
                 *out = out_t.data_ptr<scalar_t>(),
                 *lse = lse_t.data_ptr<scalar_t>();
  // Gradients accumulate in acc_t tensors (converted by the caller).
  acc_t *gq = need_q ? grads[0].data_ptr<acc_t>() : nullptr,
        *gk = need_k ? grads[1].data_ptr<acc_t>() : nullptr,
        *gv = need_v ? grads[2].data_ptr<acc_t>() : nullptr,
        *gpr = need_pos ? grads[3].data_ptr<acc_t>() : nullptr,
        *gpc = need_pos ? grads[4].data_ptr<acc_t>() : nullptr;
  at::parallel_for(0, geo.slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> probs(window * W), grad_logits(window * W),
        row_term(W), acc(geo.dim * W);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t slice = n * geo.dim * geo.plane;
      const int64_t table = n * geo.size * geo.plane;
      for (int64_t i = 0; i < geo.height; ++i) {
        row_logits(geo, q + slice, k + slice, pr + table, pc + table, i,
                   probs.data());
        const scalar_t* lse_row = lse + n * geo.plane + i * W;
        for_each_offset(geo, i, [&](int64_t o, int64_t, int64_t, int64_t j0,
                                    int64_t j1) {
          acc_t* p = probs.data() + o * W;
          for (int64_t j = j0; j < j1; ++j)
            p[j] = softmax_exp(p[j] - static_cast<acc_t>(lse_row[j]));
        });
        if (need_logits) {
          // d loss / d logit[o] = p[o] (g . v_o - g . out)
          std::fill(row_term.begin(), row_term.end(), acc_t(0));
          for (int64_t c = 0; c < geo.dim; ++c) {
            const scalar_t* gc = go + slice + c * geo.plane + i * W;
            const scalar_t* oc = out + slice + c * geo.plane + i * W;
            for (int64_t j = 0; j < W; ++j)
              row_term[j] += static_cast<acc_t>(gc[j]) *
                             static_cast<acc_t>(oc[j]);
          }
          for_each_offset(geo, i, [&](int64_t o, int64_t a, int64_t dx,
                                      int64_t j0, int64_t j1) {
            acc_t* gl = grad_logits.data() + o * W;
            const acc_t* p = probs.data() + o * W;
            const int64_t value_row = (i + a - geo.radius) * W + dx;
            for (int64_t j = j0; j < j1; ++j) gl[j] = -row_term[j];
            for (int64_t c = 0; c < geo.dim; ++c) {
              const scalar_t* gc = go + slice + c * geo.plane + i * W;
              const scalar_t* vc = v + slice + c * geo.plane + value_row;
              for (int64_t j = j0; j < j1; ++j)
                gl[j] += static_cast<acc_t>(gc[j]) * static_cast<acc_t>(vc[j]);
            }
            for (int64_t j = j0; j < j1; ++j) gl[j] *= p[j];
            if (need_pos) {
              acc_t* rows = gpr + table + a * geo.plane + i * W;
              acc_t* cols = gpc + table + (dx + geo.radius) * geo.plane + i * W;
              for (int64_t j = j0; j < j1; ++j) {
                rows[j] += gl[j];
                cols[j] += gl[j];
              }
            }
          });
        }
        if (need_q) std::fill(acc.begin(), acc.end(), acc_t(0));
        for_each_offset(geo, i, [&](int64_t o, int64_t a, int64_t dx,
                                    int64_t j0, int64_t j1) {
          const acc_t* gl = grad_logits.data() + o * W;
          const acc_t* p = probs.data() + o * W;
          const int64_t key_row = (i + a - geo.radius) * W + dx;
          for (int64_t c = 0; c < geo.dim; ++c) {
            const int64_t query_at = slice + c * geo.plane + i * W;
            const int64_t key_at = slice + c * geo.plane + key_row;
            if (need_q) {
              const scalar_t* kc = k + key_at;
              acc_t* ac = acc.data() + c * W;
              for (int64_t j = j0; j < j1; ++j)
                ac[j] += gl[j] * static_cast<acc_t>(kc[j]);
            }
            if (need_k) {
              const scalar_t* qc = q + query_at;
              acc_t* gkc = gk + key_at;
              for (int64_t j = j0; j < j1; ++j)
                gkc[j] += gl[j] * static_cast<acc_t>(qc[j]);
            }
            if (need_v) {
              const scalar_t* gc = go + query_at;
              acc_t* gvc = gv + key_at;
              for (int64_t j = j0; j < j1; ++j)
                gvc[j] += p[j] * static_cast<acc_t>(gc[j]);
            }
          }
        });
        if (need_q) {
          for (int64_t c = 0; c < geo.dim; ++c)
            std::copy_n(acc.data() + c * W, W,
                        gq + slice + c * geo.plane + i * W);
        }
      }
    }
  });
}

void check_inputs(const std::vector<at::Tensor>& tensors, int64_t dim) {
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == dim,
                "sasa_cpu: expects contiguous CPU tensors of ", dim,
                " dimensions");
    TORCH_CHECK(t.scalar_type() == tensors[0].scalar_type(),
                "sasa_cpu: expects tensors of one dtype");
  }
}

}  // namespace

// q, k, v: (N, D, H, W); pos_row, pos_col: (N, k, H, W).
// Returns out (N, D, H, W) and the log-sum-exp (N, H, W).
std::vector<at::Tensor> sasa_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v,
                                     const at::Tensor& pos_row,
                                     const at::Tensor& pos_col) {
  check_inputs({q, k, v, pos_row, pos_col}, 4);
  const int64_t kernel_size = pos_row.size(1);
  auto out = at::empty_like(q);
  auto lse = at::empty({q.size(0), q.size(2), q.size(3)}, q.options());
  if (q.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, q.scalar_type(), "sasa_forward", [&] {
          forward_kernel<scalar_t>(q, k, v, pos_row, pos_col, out, lse,
                                   kernel_size);
        });
  }
  return {out, lse};
}

// Gradients for q, k, v, pos_row and pos_col, in the op-math dtype (float
// for half and bfloat16); an entry whose flag is false is an empty tensor.
std::vector<at::Tensor> sasa_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& pos_row, const at::Tensor& pos_col,
    const at::Tensor& out, const at::Tensor& lse, bool need_q, bool need_k,
    bool need_v, bool need_pos) {
  check_inputs({grad_out, q, k, v, pos_row, pos_col, out}, 4);
  TORCH_CHECK(lse.is_contiguous() && lse.dim() == 3 &&
                  lse.scalar_type() == q.scalar_type(),
              "sasa_cpu: bad log-sum-exp tensor");
  const int64_t kernel_size = pos_row.size(1);
  const auto acc = q.options().dtype(at::toOpMathType(q.scalar_type()));
  auto make = [&](bool need, const at::Tensor& like) {
    return need ? at::zeros(like.sizes(), acc) : at::empty({0}, acc);
  };
  std::vector<at::Tensor> grads = {make(need_q, q), make(need_k, k),
                                   make(need_v, v), make(need_pos, pos_row),
                                   make(need_pos, pos_col)};
  if (q.numel() > 0 && (need_q || need_k || need_v || need_pos)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, q.scalar_type(), "sasa_backward", [&] {
          backward_kernel<scalar_t>(grad_out, q, k, v, pos_row, pos_col, out,
                                    lse, grads, kernel_size, need_q, need_k,
                                    need_v, need_pos);
        });
  }
  return grads;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sasa_forward, "SASA local attention forward (CPU)");
  m.def("backward", &sasa_backward, "SASA local attention backward (CPU)");
}
