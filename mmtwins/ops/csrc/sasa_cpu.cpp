// Fused CPU kernel of SASA's k x k local attention (mmtwins::sasa_attention).
//
// The math is that of mmtwins/ops/sasa_op.py (its module
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
// loops are explicit SIMD vectors along the row (the last few columns of a
// row one by one), with the sums over channels or offsets in registers.
// Forward keeps only the log-sum-exp; backward recomputes the
// probabilities from it.
//
// Borders: keys and values (and their gradients) are held with r zero
// columns on each side, so that every offset reads a whole row and every
// loop runs over whole rows; where a neighbour is outside the image the
// logit is set to -inf, so its probability and logit gradient are 0 and
// it meets only the zeros (or adds 0 to the padding of the gradients).
//
// Threads: ATen's intra-op pool (at::parallel_for), i.e. as many as
// torch.get_num_threads(). Forward splits the N * H rows; backward splits
// bands of rows in two phases, because a row's key and value gradients
// land on k rows (see backward_kernel).
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
  static T lane(V v, int64_t l) { return v[l]; }
};

// One element with the interface of Simd (the tail of a row).
template <typename T>
struct Scalar {
  static constexpr int64_t lanes = 1;
  typedef T V;
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V fill(T x) { return x; }
  static T lane(V v, int64_t) { return v; }
};

// Calls f(j, Simd<T>{}) for the whole vectors in [begin, end) and
// f(j, Scalar<T>{}) for the columns left over, so `f` is a generic lambda
// written once for both.
template <typename T, typename F>
inline void for_vectors(int64_t begin, int64_t end, const F& f) {
  constexpr int64_t lanes = Simd<T>::lanes;
  int64_t j = begin;
  for (; j + lanes <= end; j += lanes) f(j, Simd<T>{});
  for (; j < end; ++j) f(j, Scalar<T>{});
}

// exp(x) for x = logit - max <= 0, or -inf (masked), which gives 0.
// Float vectors: a Cephes-style polynomial (about 1 ulp) on the whole
// vector, which the libm call is not; below -87, where exp is under
// 1.7e-38, it returns 0. Double (the tests' float64 checks) and single
// columns: std::exp.
inline double softmax_exp(double x) { return std::exp(x); }
inline float softmax_exp(float x) { return std::exp(x); }

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

// Sizes of one call. `row` is the width rounded up to whole vectors (the
// stride of the per-row scratch buffers); `padded` is the row length of
// the zero-padded key/value copies.
struct Geometry {
  int64_t slices, dim, height, width, size, radius, plane, row, padded,
      padded_plane;
  // Per offset o = a * size + b: where it reads in a padded plane,
  // relative to column 0 of the window's first row, and the columns whose
  // neighbour is inside the image, [first, last).
  std::vector<int64_t> padded_shift, first, last;

  Geometry(const at::Tensor& q, int64_t kernel_size, int64_t lanes)
      : slices(q.size(0)), dim(q.size(1)), height(q.size(2)),
        width(q.size(3)), size(kernel_size), radius(kernel_size / 2),
        plane(q.size(2) * q.size(3)),
        row((q.size(3) + lanes - 1) / lanes * lanes),
        padded(q.size(3) + kernel_size - 1),
        padded_plane(q.size(2) * (q.size(3) + kernel_size - 1)) {
    for (int64_t o = 0; o < size * size; ++o) {
      const int64_t a = o / size, b = o % size, dx = b - radius;
      padded_shift.push_back(a * padded + b);
      first.push_back(std::min(width, std::max<int64_t>(0, -dx)));
      last.push_back(std::max(first.back(), std::min(width, width - dx)));
    }
  }
  // Window rows a in [first_row, last_row) lie inside the image.
  int64_t first_row(int64_t i) const {
    return std::max<int64_t>(0, radius - i);
  }
  int64_t last_row(int64_t i) const {
    return std::min<int64_t>(size, height - i + radius);
  }
};

// result[j] = sum_o w[o * row + j] x[padded_shift[o] + j] (divided by
// divisor[j]) for j in [0, W), over offsets [o0, o1): the output (w =
// probabilities, x = padded values) and the query gradient (w = logit
// gradients, x = padded keys). `x` points at channel c, window row 0.
template <typename T>
void sum_over_window(const Geometry& g, const T* w, const T* x, int64_t o0,
                     int64_t o1, T* result, const T* divisor) {
  const int64_t* shift = g.padded_shift.data();
  for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
    using S = decltype(simd);
    typename S::V sum = S::fill(0);
    for (int64_t o = o0; o < o1; ++o)
      sum += S::load(w + o * g.row + j) * S::load(x + shift[o] + j);
    if (divisor) sum /= S::load(divisor + j);
    S::store(result + j, sum);
  });
}

// Row i's logits of one slice, logits[o * row + j], for the window rows
// inside the image; -inf where column j's neighbour is outside. `k` is the
// slice's padded keys.
template <typename T>
void row_logits(const Geometry& g, const T* q, const T* k, const T* pos_row,
                const T* pos_col, int64_t i, T* logits) {
  const T masked = -std::numeric_limits<T>::infinity();
  const T* q_row = q + i * g.width;
  const T* k_window = k + (i - g.radius) * g.padded;
  for (int64_t o = g.first_row(i) * g.size; o < g.last_row(i) * g.size;
       ++o) {
    T* out = logits + o * g.row;
    const T* pr = pos_row + (o / g.size) * g.plane + i * g.width;
    const T* pc = pos_col + (o % g.size) * g.plane + i * g.width;
    const T* k_o = k_window + g.padded_shift[o];
    for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
      using S = decltype(simd);
      typename S::V sum = S::load(pr + j) + S::load(pc + j);
      for (int64_t c = 0; c < g.dim; ++c)
        sum += S::load(q_row + c * g.plane + j) *
               S::load(k_o + c * g.padded_plane + j);
      S::store(out + j, sum);
    });
    std::fill(out, out + g.first[o], masked);
    std::fill(out + g.last[o], out + g.width, masked);
  }
}

template <typename T>
void forward_kernel(const Geometry& g, const T* q, const T* k_padded,
                    const T* v_padded, const T* pr, const T* pc, T* out,
                    T* lse) {
  const int64_t window = g.size * g.size;
  const int64_t grain =
      std::max<int64_t>(1, 4096 / (g.dim * g.width * window + 1));
  at::parallel_for(0, g.slices * g.height, grain, [&](int64_t begin,
                                                      int64_t end) {
    std::vector<T> logits(window * g.row), total(g.row);
    T* L = logits.data();
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.height, i = r % g.height;
      const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
      const int64_t keys = n * g.dim * g.padded_plane;
      row_logits(g, q + slice, k_padded + keys, pr + table, pc + table, i,
                 L);
      const int64_t o0 = g.first_row(i) * g.size, o1 = g.last_row(i) * g.size;
      T* lse_row = lse + n * g.plane + i * g.width;
      // Softmax over the window; the centre is always inside the image.
      const int64_t centre = g.radius * g.size + g.radius;
      for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
        using S = decltype(simd);
        typename S::V peak = S::load(L + centre * g.row + j);
        for (int64_t o = o0; o < o1; ++o) {
          const auto x = S::load(L + o * g.row + j);
          peak = x > peak ? x : peak;
        }
        typename S::V sum = S::fill(0);
        for (int64_t o = o0; o < o1; ++o) {
          const auto p = softmax_exp(S::load(L + o * g.row + j) - peak);
          S::store(L + o * g.row + j, p);
          sum += p;
        }
        S::store(total.data() + j, sum);
        for (int64_t l = 0; l < S::lanes; ++l)
          lse_row[j + l] = S::lane(peak, l) + std::log(S::lane(sum, l));
      });
      const int64_t values = keys + (i - g.radius) * g.padded;
      for (int64_t c = 0; c < g.dim; ++c)
        sum_over_window(g, L, v_padded + values + c * g.padded_plane, o0, o1,
                        out + slice + c * g.plane + i * g.width,
                        total.data());
    }
  });
}

// Gradients; `k`, `v`, `gk` and `gv` are padded. All but grad_q
// (overwritten) are zeroed by the caller, and null means "not needed".
template <typename T>
void backward_kernel(const Geometry& g, const T* go, const T* q, const T* k,
                     const T* v, const T* pr, const T* pc, const T* out,
                     const T* lse, T* gq, T* gk, T* gv, T* gpr, T* gpc) {
  const int64_t window = g.size * g.size;
  const bool need_logits = gq || gk || gpr;
  const int64_t* shift = g.padded_shift.data();
  // The rows of a slice form bands of `band` >= 2r rows. A band's key and
  // value gradients land on its rows and r rows on either side, so bands of
  // one parity never write the same rows: the even bands of every slice
  // run in parallel, then the odd ones.
  const int64_t band = std::max<int64_t>(2 * g.radius, 1);
  const int64_t bands = (g.height + band - 1) / band;
  const int64_t per_phase = (bands + 1) / 2;
  for (int64_t phase = 0; phase < 2; ++phase) {
    at::parallel_for(0, g.slices * per_phase, 1, [&](int64_t begin,
                                                     int64_t end) {
      std::vector<T> probs(window * g.row), grad_logits(window * g.row),
          row_term(g.row);
      T* P = probs.data();
      T* GL = grad_logits.data();
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / per_phase;
        const int64_t first = (2 * (task % per_phase) + phase) * band;
        const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
        const int64_t keys = n * g.dim * g.padded_plane;
        for (int64_t i = first; i < std::min(first + band, g.height); ++i) {
          row_logits(g, q + slice, k + keys, pr + table, pc + table, i, P);
          const int64_t o0 = g.first_row(i) * g.size,
                        o1 = g.last_row(i) * g.size;
          const int64_t at_row = slice + i * g.width;
          const int64_t at_window = keys + (i - g.radius) * g.padded;
          const T* lse_row = lse + n * g.plane + i * g.width;
          for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
            using S = decltype(simd);
            const auto m = S::load(lse_row + j);
            for (int64_t o = o0; o < o1; ++o)
              S::store(P + o * g.row + j,
                       softmax_exp(S::load(P + o * g.row + j) - m));
          });
          if (need_logits) {
            // d loss / d logit[o] = p[o] (g . v_o - g . out)
            for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
              using S = decltype(simd);
              typename S::V sum = S::fill(0);
              for (int64_t c = 0; c < g.dim; ++c)
                sum += S::load(go + at_row + c * g.plane + j) *
                       S::load(out + at_row + c * g.plane + j);
              S::store(row_term.data() + j, sum);
            });
            for (int64_t o = o0; o < o1; ++o) {
              const T* v_o = v + at_window + shift[o];
              T* gl = GL + o * g.row;
              for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
                using S = decltype(simd);
                typename S::V sum = -S::load(row_term.data() + j);
                for (int64_t c = 0; c < g.dim; ++c)
                  sum += S::load(go + at_row + c * g.plane + j) *
                         S::load(v_o + c * g.padded_plane + j);
                S::store(gl + j, S::load(P + o * g.row + j) * sum);
              });
              if (gpr) {
                T* rows = gpr + table + (o / g.size) * g.plane + i * g.width;
                T* cols = gpc + table + (o % g.size) * g.plane + i * g.width;
                for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
                  using S = decltype(simd);
                  const auto x = S::load(gl + j);
                  S::store(rows + j, S::load(rows + j) + x);
                  S::store(cols + j, S::load(cols + j) + x);
                });
              }
            }
          }
          for (int64_t c = 0; c < g.dim; ++c) {
            const int64_t at_q = at_row + c * g.plane;
            const int64_t at_k = at_window + c * g.padded_plane;
            if (gq)
              sum_over_window(g, GL, k + at_k, o0, o1, gq + at_q,
                              static_cast<const T*>(nullptr));
            for (int64_t o = o0; o < o1; ++o) {
              T* gk_o = gk ? gk + at_k + shift[o] : nullptr;
              T* gv_o = gv ? gv + at_k + shift[o] : nullptr;
              const T* gl = GL + o * g.row;
              const T* p = P + o * g.row;
              for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
                using S = decltype(simd);
                if (gk_o)
                  S::store(gk_o + j, S::load(gk_o + j) + S::load(gl + j) *
                                                     S::load(q + at_q + j));
                if (gv_o)
                  S::store(gv_o + j, S::load(gv_o + j) + S::load(p + j) *
                                                     S::load(go + at_q + j));
              });
            }
          }
        }
      }
    });
  }
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
at::Tensor compute(const at::Tensor& t) {
  const auto type =
      t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return t.to(type).contiguous();
}

// (N, D, H, W) -> (N, D, H, W + 2 radius) with zero side columns.
at::Tensor pad_columns(const at::Tensor& t, int64_t radius) {
  return at::constant_pad_nd(t, {radius, radius}).contiguous();
}

int64_t lanes_of(const at::Tensor& t) {
  return kVectorBytes / at::elementSize(t.scalar_type());
}

}  // namespace

// q, k, v: (N, D, H, W); pos_row, pos_col: (N, k, H, W).
// Returns out (N, D, H, W) and the log-sum-exp (N, H, W) in q's dtype.
std::vector<at::Tensor> sasa_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v,
                                     const at::Tensor& pos_row,
                                     const at::Tensor& pos_col) {
  check_inputs({q, k, v, pos_row, pos_col}, 4);
  auto q_c = compute(q), pr = compute(pos_row), pc = compute(pos_col);
  auto out = at::empty_like(q_c);
  auto lse = at::empty({q.size(0), q.size(2), q.size(3)}, q_c.options());
  if (q.numel() > 0) {
    const Geometry g(q_c, pos_row.size(1), lanes_of(q_c));
    auto k_p = pad_columns(compute(k), g.radius),
         v_p = pad_columns(compute(v), g.radius);
    AT_DISPATCH_FLOATING_TYPES(q_c.scalar_type(), "sasa_forward", [&] {
      forward_kernel<scalar_t>(
          g, q_c.data_ptr<scalar_t>(), k_p.data_ptr<scalar_t>(),
          v_p.data_ptr<scalar_t>(), pr.data_ptr<scalar_t>(),
          pc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          lse.data_ptr<scalar_t>());
    });
  }
  return {out.to(q.scalar_type()), lse.to(q.scalar_type())};
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
  auto go_c = compute(grad_out), q_c = compute(q), pr = compute(pos_row),
       pc = compute(pos_col), out_c = compute(out), lse_c = compute(lse);
  const auto options = q_c.options();
  const bool any = need_q || need_k || need_v || need_pos;
  if (q.numel() == 0 || !any) {
    auto make = [&](bool need, const at::Tensor& like) {
      return need ? at::zeros(like.sizes(), options)
                  : at::empty({0}, options);
    };
    return {make(need_q, q), make(need_k, k), make(need_v, v),
            make(need_pos, pos_row), make(need_pos, pos_col)};
  }
  const Geometry g(q_c, pos_row.size(1), lanes_of(q_c));
  auto k_p = pad_columns(compute(k), g.radius),
       v_p = pad_columns(compute(v), g.radius);
  const auto none = at::empty({0}, options);
  at::Tensor gq = need_q ? at::empty_like(q_c) : none,
             gk = need_k ? at::zeros_like(k_p) : none,
             gv = need_v ? at::zeros_like(v_p) : none,
             gpr = need_pos ? at::zeros_like(pr) : none,
             gpc = need_pos ? at::zeros_like(pc) : none;
  AT_DISPATCH_FLOATING_TYPES(q_c.scalar_type(), "sasa_backward", [&] {
    auto ptr = [](at::Tensor& t, bool need) {
      return need ? t.data_ptr<scalar_t>() : nullptr;
    };
    backward_kernel<scalar_t>(
        g, go_c.data_ptr<scalar_t>(), q_c.data_ptr<scalar_t>(),
        k_p.data_ptr<scalar_t>(), v_p.data_ptr<scalar_t>(),
        pr.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
        out_c.data_ptr<scalar_t>(), lse_c.data_ptr<scalar_t>(),
        ptr(gq, need_q), ptr(gk, need_k), ptr(gv, need_v),
        ptr(gpr, need_pos), ptr(gpc, need_pos));
  });
  k_p.reset();
  v_p.reset();
  auto crop = [&](at::Tensor& t, bool need) {
    return need ? t.narrow(3, g.radius, g.width).contiguous() : t;
  };
  return {gq, crop(gk, need_k), crop(gv, need_v), gpr, gpc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sasa_forward, "SASA local attention forward (CPU)");
  m.def("backward", &sasa_backward, "SASA local attention backward (CPU)");
}
