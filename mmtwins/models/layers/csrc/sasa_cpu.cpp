// Fused CPU kernel of SASA's k x k local attention (mmtwins::sasa_attention).
//
// The math is that of mmtwins/models/layers/sasa_ops.py (its module
// docstring): for pixel (i, j) of slice n = (batch, head) and window offset
// o = (a, b), dy = a - r, dx = b - r, r = k / 2,
//
//   logit[o] = sum_c q[c, i, j] k[c, i + dy, j + dx] + pos_row[a, i, j]
//              + pos_col[b, i, j]
//   out[c, i, j] = sum_o softmax_o(logit)[o] v[c, i + dy, j + dx]
//
// over the offsets whose neighbour lies inside the image (the others get
// a -inf logit, so probability 0). Tensors are (N, D, H, W) planes with
// N = batch * heads. The kernel works on one image row at a time: the row's
// k * k logits stay in cache, so the q . k products are never written to
// memory (the Python offset loop writes each of them), and the innermost
// loops are explicit SIMD vectors along the row with the sum over channels
// or offsets kept in registers. Forward keeps only the log-sum-exp;
// backward recomputes the probabilities from it.
//
// Layout inside the kernel: every row is zero-padded to a multiple of the
// vector width (`row`), and keys and values (and their gradients) also get
// r zero columns on the left and the right, so that offset b reads the
// padded row from column b for every output column. Padded columns compute
// finite values from zeros and are cropped by the caller.
//
// Threads: ATen's intra-op pool (at::parallel_for), i.e. as many as
// torch.get_num_threads(). Forward splits the N * H rows; backward splits
// the N slices, because a row's key and value gradients land on k rows.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int kVectorBytes = 64;

// A SIMD vector of T (GCC/Clang vector extension; split into narrower
// registers on CPUs without 512-bit ones).
template <typename T>
struct Simd {
  static constexpr int64_t lanes = kVectorBytes / sizeof(T);
  typedef T V __attribute__((vector_size(kVectorBytes)));
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static V fill(T x) { return V{} + x; }
};

// exp(x) lane by lane, for x = logit - max <= 0 or -inf (masked), which
// gives 0. Double: std::exp (used by the tests' float64 checks). Float: a
// Cephes-style polynomial (about 1 ulp) on the whole vector; below -87,
// where exp is under 1.7e-38, it returns 0.
inline Simd<double>::V softmax_exp(Simd<double>::V x) {
  for (int64_t l = 0; l < Simd<double>::lanes; ++l) x[l] = std::exp(x[l]);
  return x;
}

inline Simd<float>::V softmax_exp(Simd<float>::V x) {
  using S = Simd<float>;
  typedef int32_t I __attribute__((vector_size(kVectorBytes)));
  const I tiny = x < S::fill(-87.0f);
  x = tiny ? S::fill(-87.0f) : x;  // keeps 2^n a normal number
  // n = round(x / ln 2): x <= 0, and conversion truncates towards zero.
  const I n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, I);
  const S::V nf = __builtin_convertvector(n, S::V);
  const S::V r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  S::V p = S::fill(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I bits = (n + 127) << 23;
  S::V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return tiny ? S::fill(0.0f) : p * scale;
}

// Sizes of one call (module comment: `row` is the padded row length).
struct Geometry {
  int64_t slices, dim, height, width, size, radius, row, plane, key_row,
      key_plane;
  // shift[o]: where offset o = a * size + b reads in a key plane, relative
  // to column 0 of the window's first row.
  std::vector<int64_t> shift;

  Geometry(int64_t slices, int64_t dim, int64_t height, int64_t width,
           int64_t row, int64_t kernel_size)
      : slices(slices), dim(dim), height(height), width(width),
        size(kernel_size), radius(kernel_size / 2), row(row),
        plane(height * row), key_row(row + kernel_size - 1),
        key_plane(height * (row + kernel_size - 1)),
        shift(kernel_size * kernel_size) {
    for (int64_t o = 0; o < size * size; ++o)
      shift[o] = (o / size) * key_row + o % size;
  }
  // Window rows a in [first_row, last_row) lie inside the image.
  int64_t first_row(int64_t i) const {
    return std::max<int64_t>(0, radius - i);
  }
  int64_t last_row(int64_t i) const {
    return std::min<int64_t>(size, height - i + radius);
  }
};

// Row i's logits of one slice, logits[o * row + j], for the window rows
// inside the image; -inf where column j + b - radius (j < width) is not.
template <typename T>
void row_logits(const Geometry& g, const T* q, const T* k, const T* pos_row,
                const T* pos_col, int64_t i, T* logits) {
  using S = Simd<T>;
  const T* q_row = q + i * g.row;
  for (int64_t a = g.first_row(i); a < g.last_row(i); ++a) {
    const T* k_row = k + (i + a - g.radius) * g.key_row;
    const T* pr = pos_row + a * g.plane + i * g.row;
    for (int64_t b = 0; b < g.size; ++b) {
      T* out = logits + (a * g.size + b) * g.row;
      const T* pc = pos_col + b * g.plane + i * g.row;
      for (int64_t j = 0; j < g.row; j += S::lanes) {
        typename S::V sum = S::load(pr + j) + S::load(pc + j);
        for (int64_t c = 0; c < g.dim; ++c)
          sum += S::load(q_row + c * g.plane + j) *
                 S::load(k_row + c * g.key_plane + b + j);
        S::store(out + j, sum);
      }
      const T masked = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < std::min<int64_t>(g.width, g.radius - b); ++j)
        out[j] = masked;
      for (int64_t j = std::max<int64_t>(0, g.width + g.radius - b);
           j < g.width; ++j)
        out[j] = masked;
    }
  }
}

template <typename T>
void forward_kernel(const Geometry& g, const T* q, const T* k, const T* v,
                    const T* pr, const T* pc, T* out, T* lse) {
  using S = Simd<T>;
  using V = typename S::V;
  const int64_t window = g.size * g.size;
  const int64_t* shift = g.shift.data();
  const int64_t grain =
      std::max<int64_t>(1, 4096 / (g.dim * g.row * window + 1));
  at::parallel_for(0, g.slices * g.height, grain, [&](int64_t begin,
                                                      int64_t end) {
    std::vector<T> logits(window * g.row), total(g.row);
    T* L = logits.data();
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.height, i = r % g.height;
      const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
      const int64_t keys = n * g.dim * g.key_plane;
      row_logits(g, q + slice, k + keys, pr + table, pc + table, i, L);
      const int64_t o0 = g.first_row(i) * g.size, o1 = g.last_row(i) * g.size;
      T* lse_row = lse + n * g.plane + i * g.row;
      // Softmax over the window; the centre is always inside the image.
      for (int64_t j = 0; j < g.row; j += S::lanes) {
        V peak = S::load(L + (g.radius * g.size + g.radius) * g.row + j);
        for (int64_t o = o0; o < o1; ++o) {
          const V x = S::load(L + o * g.row + j);
          peak = x > peak ? x : peak;
        }
        V sum = S::fill(0);
        for (int64_t o = o0; o < o1; ++o) {
          const V p = softmax_exp(S::load(L + o * g.row + j) - peak);
          S::store(L + o * g.row + j, p);
          sum += p;
        }
        S::store(total.data() + j, sum);
        for (int64_t l = 0; l < S::lanes; ++l)
          lse_row[j + l] = peak[l] + std::log(sum[l]);
      }
      const T* v_window = v + keys + (i - g.radius) * g.key_row;
      for (int64_t c = 0; c < g.dim; ++c) {
        T* out_row = out + slice + c * g.plane + i * g.row;
        const T* v_c = v_window + c * g.key_plane;
        for (int64_t j = 0; j < g.row; j += S::lanes) {
          V sum = S::fill(0);
          for (int64_t o = o0; o < o1; ++o)
            sum += S::load(L + o * g.row + j) * S::load(v_c + shift[o] + j);
          S::store(out_row + j, sum / S::load(total.data() + j));
        }
      }
    }
  });
}

// Gradients; grad_k and grad_v are laid out like k and v, all are zeroed
// by the caller (grad_q is overwritten), and null means "not needed".
template <typename T>
void backward_kernel(const Geometry& g, const T* go, const T* q, const T* k,
                     const T* v, const T* pr, const T* pc, const T* out,
                     const T* lse, T* gq, T* gk, T* gv, T* gpr, T* gpc) {
  using S = Simd<T>;
  using V = typename S::V;
  const int64_t window = g.size * g.size;
  const int64_t* shift = g.shift.data();
  const bool need_logits = gq || gk || gpr;
  at::parallel_for(0, g.slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> probs(window * g.row), grad_logits(window * g.row),
        row_term(g.row);
    T* P = probs.data();
    T* GL = grad_logits.data();
    for (int64_t n = begin; n < end; ++n) {
      const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
      const int64_t keys = n * g.dim * g.key_plane;
      for (int64_t i = 0; i < g.height; ++i) {
        row_logits(g, q + slice, k + keys, pr + table, pc + table, i, P);
        const int64_t o0 = g.first_row(i) * g.size,
                      o1 = g.last_row(i) * g.size;
        const int64_t at_row = slice + i * g.row;
        const int64_t at_window = keys + (i - g.radius) * g.key_row;
        const T* lse_row = lse + n * g.plane + i * g.row;
        for (int64_t j = 0; j < g.row; j += S::lanes) {
          const V m = S::load(lse_row + j);
          for (int64_t o = o0; o < o1; ++o)
            S::store(P + o * g.row + j,
                     softmax_exp(S::load(P + o * g.row + j) - m));
        }
        if (need_logits) {
          // d loss / d logit[o] = p[o] (g . v_o - g . out)
          for (int64_t j = 0; j < g.row; j += S::lanes) {
            V sum = S::fill(0);
            for (int64_t c = 0; c < g.dim; ++c)
              sum += S::load(go + at_row + c * g.plane + j) *
                     S::load(out + at_row + c * g.plane + j);
            S::store(row_term.data() + j, sum);
          }
          for (int64_t o = o0; o < o1; ++o) {
            const T* v_o = v + at_window + shift[o];
            for (int64_t j = 0; j < g.row; j += S::lanes) {
              V sum = -S::load(row_term.data() + j);
              for (int64_t c = 0; c < g.dim; ++c)
                sum += S::load(go + at_row + c * g.plane + j) *
                       S::load(v_o + c * g.key_plane + j);
              S::store(GL + o * g.row + j, S::load(P + o * g.row + j) * sum);
            }
          }
          if (gpr) {
            for (int64_t o = o0; o < o1; ++o) {
              T* rows = gpr + table + (o / g.size) * g.plane + i * g.row;
              T* cols = gpc + table + (o % g.size) * g.plane + i * g.row;
              for (int64_t j = 0; j < g.row; j += S::lanes) {
                const V x = S::load(GL + o * g.row + j);
                S::store(rows + j, S::load(rows + j) + x);
                S::store(cols + j, S::load(cols + j) + x);
              }
            }
          }
        }
        for (int64_t c = 0; c < g.dim; ++c) {
          const int64_t at_q = at_row + c * g.plane;
          const int64_t at_k = at_window + c * g.key_plane;
          if (gq) {
            for (int64_t j = 0; j < g.row; j += S::lanes) {
              V sum = S::fill(0);
              for (int64_t o = o0; o < o1; ++o)
                sum += S::load(GL + o * g.row + j) *
                       S::load(k + at_k + shift[o] + j);
              S::store(gq + at_q + j, sum);
            }
          }
          for (int64_t o = o0; o < o1; ++o) {
            T* gk_o = gk ? gk + at_k + shift[o] : nullptr;
            T* gv_o = gv ? gv + at_k + shift[o] : nullptr;
            for (int64_t j = 0; j < g.row; j += S::lanes) {
              if (gk_o)
                S::store(gk_o + j, S::load(gk_o + j) +
                                       S::load(GL + o * g.row + j) *
                                           S::load(q + at_q + j));
              if (gv_o)
                S::store(gv_o + j, S::load(gv_o + j) +
                                       S::load(P + o * g.row + j) *
                                           S::load(go + at_q + j));
            }
          }
        }
      }
    }
  });
}

void check_inputs(const std::vector<at::Tensor>& tensors, int64_t dim) {
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.dim() == dim,
                "sasa_cpu: expects CPU tensors of ", dim, " dimensions");
    TORCH_CHECK(t.scalar_type() == tensors[0].scalar_type(),
                "sasa_cpu: expects tensors of one dtype");
  }
}

// How the kernel holds a tensor: float64 stays, every other float type is
// computed in float32.
at::ScalarType compute_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

int64_t lanes(at::ScalarType type) {
  return kVectorBytes / at::elementSize(type);
}

// The last dimension zero-padded by `left` and `right` columns, in the
// compute dtype, contiguous.
at::Tensor padded(const at::Tensor& t, int64_t left, int64_t right) {
  auto x = t.to(compute_type(t));
  if (left || right) x = at::constant_pad_nd(x, {left, right});
  return x.contiguous();
}

int64_t row_length(const at::Tensor& q) {
  const int64_t step = lanes(compute_type(q));
  return (q.size(3) + step - 1) / step * step;
}

at::Tensor crop(const at::Tensor& t, int64_t left, int64_t width,
                at::ScalarType type) {
  return t.narrow(t.dim() - 1, left, width).to(type).contiguous();
}

}  // namespace

// q, k, v: (N, D, H, W); pos_row, pos_col: (N, k, H, W).
// Returns out (N, D, H, W) and the log-sum-exp (N, H, W) in q's dtype.
std::vector<at::Tensor> sasa_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v,
                                     const at::Tensor& pos_row,
                                     const at::Tensor& pos_col) {
  check_inputs({q, k, v, pos_row, pos_col}, 4);
  if (q.numel() == 0)
    return {at::empty_like(q), q.new_empty({q.size(0), q.size(2), q.size(3)})};
  const int64_t size = pos_row.size(1), radius = size / 2, W = q.size(3);
  const int64_t row = row_length(q), extra = row - W;
  const Geometry g(q.size(0), q.size(1), q.size(2), W, row, size);
  auto q_p = padded(q, 0, extra), pr = padded(pos_row, 0, extra),
       pc = padded(pos_col, 0, extra), k_p = padded(k, radius, radius + extra),
       v_p = padded(v, radius, radius + extra);
  auto out = at::empty_like(q_p);
  auto lse = at::empty({q.size(0), q.size(2), row}, q_p.options());
  AT_DISPATCH_FLOATING_TYPES(q_p.scalar_type(), "sasa_forward", [&] {
    forward_kernel<scalar_t>(
        g, q_p.data_ptr<scalar_t>(), k_p.data_ptr<scalar_t>(),
        v_p.data_ptr<scalar_t>(), pr.data_ptr<scalar_t>(),
        pc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        lse.data_ptr<scalar_t>());
  });
  return {crop(out, 0, W, q.scalar_type()), crop(lse, 0, W, q.scalar_type())};
}

// Gradients for q, k, v, pos_row and pos_col, in float32 for half and
// bfloat16 inputs (q's dtype otherwise); an entry whose flag is false is
// an empty tensor.
std::vector<at::Tensor> sasa_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& pos_row, const at::Tensor& pos_col,
    const at::Tensor& out, const at::Tensor& lse, bool need_q, bool need_k,
    bool need_v, bool need_pos) {
  check_inputs({grad_out, q, k, v, pos_row, pos_col, out}, 4);
  TORCH_CHECK(lse.dim() == 3 && lse.scalar_type() == q.scalar_type(),
              "sasa_cpu: bad log-sum-exp tensor");
  const auto type = compute_type(q);
  const auto options = q.options().dtype(type);
  const bool need[] = {need_q, need_k, need_v, need_pos, need_pos};
  const at::Tensor* like[] = {&q, &k, &v, &pos_row, &pos_col};
  std::vector<at::Tensor> grads(5);
  if (q.numel() == 0 || !(need_q || need_k || need_v || need_pos)) {
    for (int t = 0; t < 5; ++t)
      grads[t] = need[t] ? at::zeros(like[t]->sizes(), options)
                         : at::empty({0}, options);
    return grads;
  }
  const int64_t size = pos_row.size(1), radius = size / 2, W = q.size(3);
  const int64_t row = row_length(q), extra = row - W;
  const Geometry g(q.size(0), q.size(1), q.size(2), W, row, size);
  auto go_p = padded(grad_out, 0, extra), q_p = padded(q, 0, extra),
       pr = padded(pos_row, 0, extra), pc = padded(pos_col, 0, extra),
       out_p = padded(out, 0, extra), lse_p = padded(lse, 0, extra),
       k_p = padded(k, radius, radius + extra),
       v_p = padded(v, radius, radius + extra);
  at::Tensor work[] = {
      need_q ? at::empty_like(q_p) : at::Tensor(),
      need_k ? at::zeros_like(k_p) : at::Tensor(),
      need_v ? at::zeros_like(v_p) : at::Tensor(),
      need_pos ? at::zeros_like(pr) : at::Tensor(),
      need_pos ? at::zeros_like(pc) : at::Tensor()};
  AT_DISPATCH_FLOATING_TYPES(type, "sasa_backward", [&] {
    auto ptr = [](at::Tensor& t) {
      return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
    };
    backward_kernel<scalar_t>(
        g, go_p.data_ptr<scalar_t>(), q_p.data_ptr<scalar_t>(),
        k_p.data_ptr<scalar_t>(), v_p.data_ptr<scalar_t>(),
        pr.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
        out_p.data_ptr<scalar_t>(), lse_p.data_ptr<scalar_t>(), ptr(work[0]),
        ptr(work[1]), ptr(work[2]), ptr(work[3]), ptr(work[4]));
  });
  const int64_t left[] = {0, radius, radius, 0, 0};
  for (int t = 0; t < 5; ++t)
    grads[t] = need[t] ? crop(work[t], left[t], W, type)
                       : at::empty({0}, options);
  return grads;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sasa_forward, "SASA local attention forward (CPU)");
  m.def("backward", &sasa_backward, "SASA local attention backward (CPU)");
}
