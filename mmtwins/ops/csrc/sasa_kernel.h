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
// a -inf logit, so probability 0), where, with head h = n % heads and
// e = D / 2 channels per half,
//
//   pos_row[a, i, j] = sum_{c < e} q[c, i, j] rel_h[a, h, c]
//   pos_col[b, i, j] = sum_{c < e} q[e + c, i, j] rel_w[b, h, c]
//
// are computed here row by row (they never go to memory). Tensors are (N, D, H, W) planes with
// N = batch * heads. The kernel works on one image row at a time: the row's
// k * k logits stay in cache, so the q . k products are never written to
// memory (the Python offset loop writes each of them), and the innermost
// loops are explicit SIMD vectors along the row (the last few columns of a
// row one by one), with the sums over channels or offsets in registers.
// For windows of 3, 5 and 7 the k offsets of one window row are handled
// together, their k sums (or k weights) held in registers while the loop
// runs over the channels, so each channel's vector is loaded once for k
// offsets. Forward keeps only the log-sum-exp; backward recomputes the
// probabilities from it, and gathers the key and value gradients of a
// key row from the k columns that attend to each key (key_value_row)
// rather than scattering them one offset at a time.
//
// Borders: the windows read keys and values from per-thread copies of
// their rows with r zero columns on each side (WindowRows), and
// the per-row scratch rows (logits, probabilities, logit gradients, the
// query row) likewise, so that every offset reads a whole row and every
// loop runs over whole rows; where a neighbour is outside the image the
// logit is set to -inf, so its probability and logit gradient are 0 and
// it meets only zeros.
//
// Threads: the caller passes parallel_for(begin, end, grain, f), which runs
// f(b, e) over pieces of [begin, end) on its thread pool (ATen's intra-op
// pool for the PyTorch op, the session's for the onnxruntime op). Forward
// splits the N * H rows; backward splits bands of rows in two phases,
// because a row's key and value gradients land on k rows (see
// backward_kernel).
//
// This header has no dependency beyond the C++ standard library, so that
// both sasa_cpu.cpp (the PyTorch op) and sasa_ort.cpp (the onnxruntime
// op) compile the same kernel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace mmtwins_sasa {

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

// Calls fixed(std::integral_constant<int, S>{}) for the window sizes S
// with a compile-time variant (3, 5, 7), any() for the others.
template <typename Fixed, typename Any>
inline void by_window_size(int64_t size, const Fixed& fixed, const Any& any) {
  switch (size) {
    case 3: return fixed(std::integral_constant<int, 3>{});
    case 5: return fixed(std::integral_constant<int, 5>{});
    case 7: return fixed(std::integral_constant<int, 7>{});
    default: return any();
  }
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

// Sizes of one call. `row` is the stride of the per-row scratch buffers:
// the width rounded up to whole vectors plus a zero `margin` of at least
// `radius` columns on each side (so that a row shifted by up to `radius`
// columns is read whole); the margin is whole vectors, so that column 0 of
// every scratch row is vector-aligned (see Scratch). `padded` is the row
// length of the zero-padded key/value rows of a window (WindowRows), which
// hold a row's `dim` channels `padded` apart and window rows `window_row`
// apart.
struct Geometry {
  int64_t slices, dim, height, width, size, radius, plane, margin, row,
      padded, window_row;
  // Per offset o = a * size + b: where it reads in a window, relative to
  // column 0 of the window's first row, and the columns whose neighbour is
  // inside the image, [first, last).
  std::vector<int64_t> padded_shift, first, last;

  // A call on `slices` planes of (dim, height, width) with a window of
  // kernel_size and vectors of `lanes` elements.
  Geometry(int64_t slices_, int64_t dim_, int64_t height_, int64_t width_,
           int64_t kernel_size, int64_t lanes)
      : slices(slices_), dim(dim_), height(height_), width(width_),
        size(kernel_size), radius(kernel_size / 2), plane(height_ * width_),
        margin((kernel_size / 2 + lanes - 1) / lanes * lanes),
        row((width_ + lanes - 1) / lanes * lanes + 2 * margin),
        padded(width_ + kernel_size - 1),
        window_row(dim_ * (width_ + kernel_size - 1)) {
    for (int64_t o = 0; o < size * size; ++o) {
      const int64_t a = o / size, b = o % size, dx = b - radius;
      padded_shift.push_back(a * window_row + b);
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

// Zeroed per-thread scratch of `rows` rows of g.row elements, aligned to
// kVectorBytes; at(m) points at column 0 of row m (past its margin).
template <typename T>
struct Scratch {
  std::vector<T> storage;
  T* base;
  int64_t row;
  Scratch(const Geometry& g, int64_t rows)
      : storage(rows * g.row + kVectorBytes / sizeof(T)), row(g.row) {
    const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
    const auto aligned = (address + kVectorBytes - 1) /
                         kVectorBytes * kVectorBytes;
    base = storage.data() + (aligned - address) / sizeof(T) + g.margin;
  }
  T* at(int64_t m) { return base + m * row; }
};

// The zero-padded key (or value) rows that the windows of consecutive
// query rows of one slice read, copied from the unpadded (D, H, W) plane
// into a per-thread ring as the rows advance, so no padded copy of the
// whole tensor is made. The ring holds R = S + 1 rows (the windows of two
// query rows) in 2 R slots of `dim` rows of g.padded elements (r zero
// columns on each side, never written); key row y is copied into slots
// y % R and y % R + R, so the S + 1 rows from any window's first are
// consecutive slots, g.window_row apart. Only rows inside the image are
// loaded; the window loops never read the others.
template <typename T>
struct WindowRows {
  const Geometry& g;
  const int64_t ring;
  std::vector<T> storage;
  const T* source = nullptr;
  int64_t next = 0;  // the next key row to copy in
  explicit WindowRows(const Geometry& geometry)
      : g(geometry), ring(geometry.size + 1),
        storage(2 * ring * geometry.window_row) {}
  // Start a run of consecutive query rows of the slice at `slice`, the
  // first being row i.
  void start(const T* slice, int64_t i) {
    source = slice;
    next = std::max<int64_t>(0, i - g.radius);
  }
  // The window of query rows i to i + count - 1 (count = 1 or 2; the
  // rows after the previous call's): column 0 of its first row, which
  // holds key row i - r.
  const T* window(int64_t i, int64_t count) {
    const int64_t last = std::min(g.height, i + count + g.radius);
    for (; next < last; ++next) {
      T* slot = storage.data() + (next % ring) * g.window_row + g.radius;
      const T* from = source + next * g.width;
      for (int64_t c = 0; c < g.dim; ++c) {
        std::memcpy(slot + c * g.padded, from + c * g.plane,
                    g.width * sizeof(T));
        std::memcpy(slot + ring * g.window_row + c * g.padded,
                    from + c * g.plane, g.width * sizeof(T));
      }
    }
    const int64_t first = ((i - g.radius) % ring + ring) % ring;
    return storage.data() + first * g.window_row;
  }
};

// One or two consecutive query rows i, i + 1 of a slice, processed
// together: the key (or value) vectors the two rows' windows share are
// loaded once for both. The group's window is row i's (WindowRows); row
// i + m's window row a is the group's window row e = a + m. Row i + m's
// window rows inside the image are [a0[m], a1[m]).
struct RowGroup {
  int64_t count, a0[2] = {0, 0}, a1[2] = {0, 0}, e0, e1;
  RowGroup(const Geometry& g, int64_t i, int64_t rows) : count(rows) {
    e0 = g.size;
    e1 = 0;
    for (int64_t m = 0; m < count; ++m) {
      a0[m] = g.first_row(i + m);
      a1[m] = g.last_row(i + m);
      e0 = std::min(e0, a0[m] + m);
      e1 = std::max(e1, a1[m] + m);
    }
  }
  bool uses(int64_t m, int64_t e) const {
    return m < count && e - m >= a0[m] && e - m < a1[m];
  }
};

// Dot products over channels between the rows of a group and each window
// offset: for row m, its window rows a (inside the image), the offsets
// o = a * S + b of row a, and columns x in [0, W),
//
//   dot[m, o, x] = init(m, a, b, x) + sum_c rows[m][c * plane + x]
//                  window[(a + m) * window_row + c * padded + b + x]
//
// handed to finish(m, a, b, x, dot) (a and b are given, not o, so that
// no call divides by a size known only at run time). This gives the logits (rows = queries,
// window = padded keys) and the logit gradients (rows = output gradient,
// window = padded values). With the window size S fixed at compile time,
// a vector of each row is loaded once per channel for the S offsets of a
// window row, whose sums stay in registers, and each window vector once
// for both rows; window_dots_any is the same for any size, one row and
// one offset at a time.
template <typename T, int S, bool U0, bool U1, typename Init,
          typename Finish>
void window_row_dots(const Geometry& g, const T* const* rows,
                     const T* window_e, int64_t e, const Init& init,
                     const Finish& finish) {
  for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
    using Vec = decltype(simd);
    typename Vec::V dot0[S], dot1[S];
    for (int b = 0; b < S; ++b) {
      if constexpr (U0) dot0[b] = init(0, e, b, x, simd);
      if constexpr (U1) dot1[b] = init(1, e - 1, b, x, simd);
    }
    for (int64_t c = 0; c < g.dim; ++c) {
      const T* at = window_e + c * g.padded + x;
      if constexpr (U0 && U1) {
        const auto value0 = Vec::load(rows[0] + c * g.plane + x);
        const auto value1 = Vec::load(rows[1] + c * g.plane + x);
        for (int b = 0; b < S; ++b) {
          const auto key = Vec::load(at + b);
          dot0[b] += value0 * key;
          dot1[b] += value1 * key;
        }
      } else {
        const auto value = Vec::load(rows[U0 ? 0 : 1] + c * g.plane + x);
        for (int b = 0; b < S; ++b)
          (U0 ? dot0 : dot1)[b] += value * Vec::load(at + b);
      }
    }
    for (int b = 0; b < S; ++b) {
      if constexpr (U0) finish(0, e, b, x, dot0[b], simd);
      if constexpr (U1) finish(1, e - 1, b, x, dot1[b], simd);
    }
  });
}

template <typename T, int S, typename Init, typename Finish>
void window_dots_fixed(const Geometry& g, const RowGroup& group,
                       const T* const* rows, const T* window,
                       const Init& init, const Finish& finish) {
  for (int64_t e = group.e0; e < group.e1; ++e) {
    const T* window_e = window + e * g.window_row;
    const bool use0 = group.uses(0, e), use1 = group.uses(1, e);
    if (use0 && use1)
      window_row_dots<T, S, true, true>(g, rows, window_e, e, init, finish);
    else if (use0)
      window_row_dots<T, S, true, false>(g, rows, window_e, e, init,
                                         finish);
    else if (use1)
      window_row_dots<T, S, false, true>(g, rows, window_e, e, init,
                                         finish);
  }
}

template <typename T, typename Init, typename Finish>
void window_dots_any(const Geometry& g, int64_t m, const T* row,
                     const T* window, int64_t a0, int64_t a1,
                     const Init& init, const Finish& finish) {
  for (int64_t o = a0 * g.size; o < a1 * g.size; ++o) {
    const T* window_o = window + g.padded_shift[o];
    const int64_t a = o / g.size, b = o % g.size;
    for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
      using Vec = decltype(simd);
      auto dot = init(m, a, b, x, simd);
      for (int64_t c = 0; c < g.dim; ++c)
        dot += Vec::load(row + c * g.plane + x) *
               Vec::load(window_o + c * g.padded + x);
      finish(m, a, b, x, dot, simd);
    });
  }
}

template <typename T, typename Init, typename Finish>
void window_dots(const Geometry& g, const RowGroup& group,
                 const T* const* rows, const T* window, const Init& init,
                 const Finish& finish) {
  by_window_size(
      g.size,
      [&](auto size) {
        window_dots_fixed<T, decltype(size)::value>(g, group, rows, window,
                                                    init, finish);
      },
      [&] {
        for (int64_t m = 0; m < group.count; ++m)
          window_dots_any<T>(g, m, rows[m], window + m * g.window_row,
                             group.a0[m], group.a1[m], init, finish);
      });
}

// Weighted sums over the window, for every row m of a group, channel c
// and column x:
//
//   result[m][c * plane + x] = sum_o w[m][o * row + x]
//       window[m * window_row + c * padded + padded_shift[o] + x]
//
// over the offsets of row m's window rows inside the image, divided by
// divisor[m][x] when given: the output (w = probabilities, window = padded
// values) and the query gradient (w = logit gradients, window = padded
// keys). With S fixed the S weights of a window row stay in registers
// over all channels, and each window vector is loaded once for both rows.
template <typename T, int S, bool U0, bool U1, typename Vec>
inline void window_row_sums(const Geometry& g, const RowGroup& group,
                            const T* const* w, const T* window_e, int64_t e,
                            int64_t x, T* const* result,
                            const T* const* divisor) {
  typename Vec::V weight0[S], weight1[S];
  bool first0 = false, last0 = false, first1 = false, last1 = false;
  if constexpr (U0) {
    for (int b = 0; b < S; ++b)
      weight0[b] = Vec::load(w[0] + (e * S + b) * g.row + x);
    first0 = e == group.a0[0];
    last0 = e + 1 == group.a1[0] && divisor[0];
  }
  if constexpr (U1) {
    for (int b = 0; b < S; ++b)
      weight1[b] = Vec::load(w[1] + ((e - 1) * S + b) * g.row + x);
    first1 = e - 1 == group.a0[1];
    last1 = e == group.a1[1] && divisor[1];
  }
  for (int64_t c = 0; c < g.dim; ++c) {
    const T* at = window_e + c * g.padded;
    typename Vec::V sum0, sum1;
    if constexpr (U0 && U1) {
      auto value = Vec::load(at);
      sum0 = weight0[0] * value;
      sum1 = weight1[0] * value;
      for (int b = 1; b < S; ++b) {
        value = Vec::load(at + b);
        sum0 += weight0[b] * value;
        sum1 += weight1[b] * value;
      }
    } else if constexpr (U0) {
      sum0 = weight0[0] * Vec::load(at);
      for (int b = 1; b < S; ++b) sum0 += weight0[b] * Vec::load(at + b);
    } else {
      sum1 = weight1[0] * Vec::load(at);
      for (int b = 1; b < S; ++b) sum1 += weight1[b] * Vec::load(at + b);
    }
    if constexpr (U0) {
      T* out = result[0] + c * g.plane + x;
      if (!first0) sum0 = Vec::load(out) + sum0;
      if (last0) sum0 /= Vec::load(divisor[0] + x);
      Vec::store(out, sum0);
    }
    if constexpr (U1) {
      T* out = result[1] + c * g.plane + x;
      if (!first1) sum1 = Vec::load(out) + sum1;
      if (last1) sum1 /= Vec::load(divisor[1] + x);
      Vec::store(out, sum1);
    }
  }
}

template <typename T, int S>
void window_sums_fixed(const Geometry& g, const RowGroup& group,
                       const T* const* w, const T* window, T* const* result,
                       const T* const* divisor) {
  for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
    using Vec = decltype(simd);
    for (int64_t e = group.e0; e < group.e1; ++e) {
      const T* window_e = window + e * g.window_row + x;
      const bool use0 = group.uses(0, e), use1 = group.uses(1, e);
      if (use0 && use1)
        window_row_sums<T, S, true, true, Vec>(g, group, w, window_e, e, x,
                                               result, divisor);
      else if (use0)
        window_row_sums<T, S, true, false, Vec>(g, group, w, window_e, e, x,
                                                result, divisor);
      else if (use1)
        window_row_sums<T, S, false, true, Vec>(g, group, w, window_e, e, x,
                                                result, divisor);
    }
  });
}

template <typename T>
void window_sums_any(const Geometry& g, const T* w, const T* window,
                     int64_t a0, int64_t a1, T* result, const T* divisor) {
  const int64_t* shift = g.padded_shift.data();
  for (int64_t c = 0; c < g.dim; ++c) {
    const T* window_c = window + c * g.padded;
    for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
      using Vec = decltype(simd);
      typename Vec::V sum = Vec::fill(0);
      for (int64_t o = a0 * g.size; o < a1 * g.size; ++o)
        sum += Vec::load(w + o * g.row + x) *
               Vec::load(window_c + shift[o] + x);
      if (divisor) sum /= Vec::load(divisor + x);
      Vec::store(result + c * g.plane + x, sum);
    });
  }
}

template <typename T>
void window_sums(const Geometry& g, const RowGroup& group, const T* const* w,
                 const T* window, T* const* result,
                 const T* const* divisor) {
  by_window_size(
      g.size,
      [&](auto size) {
        window_sums_fixed<T, decltype(size)::value>(g, group, w, window,
                                                    result, divisor);
      },
      [&] {
        for (int64_t m = 0; m < group.count; ++m)
          window_sums_any<T>(g, w[m], window + m * g.window_row,
                             group.a0[m], group.a1[m], result[m],
                             divisor[m]);
      });
}

// The offset embeddings (k, heads, D / 2) of both axes.
template <typename T>
struct Tables {
  const T* rel_h;
  const T* rel_w;
  int64_t heads;
};

// One query row's positional logits for one axis: pos[a * row + x] =
// sum_{c < D/2} row[(first + c) * plane + x] table[a, h, c], for the k
// offsets a (`first`: 0 for rows, D / 2 for columns). With S fixed the S
// sums stay in registers and each query vector is loaded once.
template <typename T, int S>
void positional_row_fixed(const Geometry& g, const T* row, const T* table,
                          int64_t heads, int64_t h, int64_t first, T* pos) {
  const int64_t half = g.dim / 2, stride = heads * half;
  const T* weight = table + h * half;
  for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
    using Vec = decltype(simd);
    typename Vec::V sum[S];
    for (int a = 0; a < S; ++a) sum[a] = Vec::fill(0);
    for (int64_t c = 0; c < half; ++c) {
      const auto value = Vec::load(row + (first + c) * g.plane + x);
      for (int a = 0; a < S; ++a) sum[a] += value * weight[a * stride + c];
    }
    for (int a = 0; a < S; ++a) Vec::store(pos + a * g.row + x, sum[a]);
  });
}

template <typename T>
void positional_row(const Geometry& g, const T* row, const T* table,
                    int64_t heads, int64_t h, int64_t first, T* pos) {
  by_window_size(
      g.size,
      [&](auto size) {
        positional_row_fixed<T, decltype(size)::value>(g, row, table, heads,
                                                       h, first, pos);
      },
      [&] {
        const int64_t half = g.dim / 2;
        for (int64_t a = 0; a < g.size; ++a) {
          const T* weight = table + (a * heads + h) * half;
          for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
            using Vec = decltype(simd);
            typename Vec::V sum = Vec::fill(0);
            for (int64_t c = 0; c < half; ++c)
              sum += Vec::load(row + (first + c) * g.plane + x) * weight[c];
            Vec::store(pos + a * g.row + x, sum);
          });
        }
      });
}

// The logits of a group's rows i + m of slice n, logits[m][o * row + j],
// for the window rows inside the image; -inf where column j's neighbour is
// outside. `q` is the slice's queries, `keys` the group's window of padded
// keys (WindowRows), `pos` 4 k scratch rows for the positional logits.
template <typename T>
void group_logits(const Geometry& g, const RowGroup& group, const T* q,
                  const T* keys, const Tables<T>& tables, int64_t n,
                  int64_t i, T* pos, T* const* logits) {
  const T masked = -std::numeric_limits<T>::infinity();
  const T* rows[2] = {q + i * g.width,
                      group.count == 2 ? q + (i + 1) * g.width : nullptr};
  const int64_t h = n % tables.heads, half = g.dim / 2;
  for (int64_t m = 0; m < group.count; ++m) {
    T* pos_m = pos + 2 * m * g.size * g.row;
    positional_row(g, rows[m], tables.rel_h, tables.heads, h, 0, pos_m);
    positional_row(g, rows[m], tables.rel_w, tables.heads, h, half,
                   pos_m + g.size * g.row);
  }
  window_dots<T>(
      g, group, rows, keys,
      [&](int64_t m, int64_t a, int64_t b, int64_t x, auto simd) {
        using Vec = decltype(simd);
        const T* pos_m = pos + 2 * m * g.size * g.row + x;
        return Vec::load(pos_m + a * g.row) +
               Vec::load(pos_m + (g.size + b) * g.row);
      },
      [&](int64_t m, int64_t a, int64_t b, int64_t x, auto dot, auto simd) {
        decltype(simd)::store(logits[m] + (a * g.size + b) * g.row + x,
                              dot);
      });
  for (int64_t m = 0; m < group.count; ++m) {
    for (int64_t o = group.a0[m] * g.size; o < group.a1[m] * g.size; ++o) {
      T* out = logits[m] + o * g.row;
      std::fill(out, out + g.first[o], masked);
      std::fill(out + g.last[o], out + g.width, masked);
    }
  }
}

template <typename T, typename Parallel>
void forward_kernel(const Geometry& g, const T* q, const T* k, const T* v,
                    const Tables<T>& tables, T* out, T* lse,
                    const Parallel& parallel_for) {
  const int64_t window = g.size * g.size;
  const int64_t grain =
      std::max<int64_t>(2, 4096 / (g.dim * g.width * window + 1));
  parallel_for(0, g.slices * g.height, grain, [&](int64_t begin,
                                                  int64_t end) {
    Scratch<T> logits(g, 2 * window), total(g, 2), pos(g, 4 * g.size);
    WindowRows<T> keys(g), values(g);
    T* L[2] = {logits.at(0), logits.at(window)};
    int64_t count = 1;
    for (int64_t r = begin; r < end; r += count) {
      const int64_t n = r / g.height, i = r % g.height;
      count = r + 1 < end && i + 1 < g.height ? 2 : 1;
      const int64_t slice = n * g.dim * g.plane;
      if (r == begin || i == 0) {
        keys.start(k + slice, i);
        values.start(v + slice, i);
      }
      const RowGroup group(g, i, count);
      group_logits(g, group, q + slice, keys.window(i, count), tables, n, i,
                   pos.at(0), L);
      // Softmax over each row's window; the centre is always inside.
      const int64_t centre = g.radius * g.size + g.radius;
      for (int64_t m = 0; m < count; ++m) {
        const int64_t o0 = group.a0[m] * g.size, o1 = group.a1[m] * g.size;
        T* lse_row = lse + n * g.plane + (i + m) * g.width;
        T* Lm = L[m];
        T* sums = total.at(m);
        for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
          using S = decltype(simd);
          typename S::V peak = S::load(Lm + centre * g.row + j);
          for (int64_t o = o0; o < o1; ++o) {
            const auto x = S::load(Lm + o * g.row + j);
            peak = x > peak ? x : peak;
          }
          typename S::V sum = S::fill(0);
          for (int64_t o = o0; o < o1; ++o) {
            const auto p = softmax_exp(S::load(Lm + o * g.row + j) - peak);
            S::store(Lm + o * g.row + j, p);
            sum += p;
          }
          S::store(sums + j, sum);
          for (int64_t l = 0; l < S::lanes; ++l)
            lse_row[j + l] = S::lane(peak, l) + std::log(S::lane(sum, l));
        });
      }
      T* result[2] = {out + slice + i * g.width,
                      count == 2 ? out + slice + (i + 1) * g.width : nullptr};
      const T* divisor[2] = {total.at(0), total.at(1)};
      window_sums<T>(g, group, L, values.window(i, count), result, divisor);
    }
  });
}

// The key and value gradients that query row i sends to key row y = i + a -
// r (window row a inside the image), gathered per key column instead of
// scattered per offset: for key column x, the offsets b of window row a
// come from query column j = x + r - b, so
//
//   gk[c, y, x] += sum_b gl[a * S + b, x + r - b] q[c, i, x + r - b]
//   gv[c, y, x] += sum_b  p[a * S + b, x + r - b] go[c, i, x + r - b]
//
// where gl and p are 0 outside the image and the scratch rows carry r zero
// columns on each side. `gl` and `p` point at offset a * S, `qs` and `gos`
// at the scratch copies of query row i and its output gradient (channel c
// at c * row); `gk` and `gv` at row y of channel 0 (null: not needed).
// With S known at compile time the S logit gradients and probabilities of
// a vector of columns stay in registers over all channels, so each
// channel costs S loads per gradient and one read-modify-write.
template <typename T, int S>
void key_value_row_fixed(const Geometry& g, const T* gl, const T* p,
                         const T* qs, const T* gos, T* gk, T* gv) {
  constexpr int64_t r = S / 2;
  for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
    using Vec = decltype(simd);
    typename Vec::V wk[S], wv[S];
    for (int64_t b = 0; b < S; ++b) {
      if (gk) wk[b] = Vec::load(gl + b * g.row + x + r - b);
      if (gv) wv[b] = Vec::load(p + b * g.row + x + r - b);
    }
    for (int64_t c = 0; c < g.dim; ++c) {
      if (gk) {
        const T* src = qs + c * g.row + x + r;
        typename Vec::V sum = wk[0] * Vec::load(src);
        for (int64_t b = 1; b < S; ++b) sum += wk[b] * Vec::load(src - b);
        T* dst = gk + c * g.plane + x;
        Vec::store(dst, Vec::load(dst) + sum);
      }
      if (gv) {
        const T* src = gos + c * g.row + x + r;
        typename Vec::V sum = wv[0] * Vec::load(src);
        for (int64_t b = 1; b < S; ++b) sum += wv[b] * Vec::load(src - b);
        T* dst = gv + c * g.plane + x;
        Vec::store(dst, Vec::load(dst) + sum);
      }
    }
  });
}

// The same for any window size, reading gl and p from the scratch rows.
template <typename T>
void key_value_row_any(const Geometry& g, const T* gl, const T* p,
                       const T* qs, const T* gos, T* gk, T* gv) {
  const int64_t r = g.radius;
  for (int64_t c = 0; c < g.dim; ++c) {
    for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
      using Vec = decltype(simd);
      typename Vec::V sum_k = Vec::fill(0), sum_v = Vec::fill(0);
      for (int64_t b = 0; b < g.size; ++b) {
        const int64_t j = x + r - b;
        if (gk)
          sum_k += Vec::load(gl + b * g.row + j) *
                   Vec::load(qs + c * g.row + j);
        if (gv)
          sum_v += Vec::load(p + b * g.row + j) *
                   Vec::load(gos + c * g.row + j);
      }
      if (gk) {
        T* dst = gk + c * g.plane + x;
        Vec::store(dst, Vec::load(dst) + sum_k);
      }
      if (gv) {
        T* dst = gv + c * g.plane + x;
        Vec::store(dst, Vec::load(dst) + sum_v);
      }
    });
  }
}

template <typename T>
void key_value_row(const Geometry& g, const T* gl, const T* p, const T* qs,
                   const T* gos, T* gk, T* gv) {
  by_window_size(
      g.size,
      [&](auto size) {
        key_value_row_fixed<T, decltype(size)::value>(g, gl, p, qs, gos, gk,
                                                      gv);
      },
      [&] { key_value_row_any<T>(g, gl, p, qs, gos, gk, gv); });
}

// Gradients, all written here (the caller allocates them uninitialised);
// null means "not needed".
template <typename T, typename Parallel>
void backward_kernel(const Geometry& g, const T* go, const T* q, const T* k,
                     const T* v, const Tables<T>& tables, const T* out,
                     const T* lse, T* gq, T* gk, T* gv, T* gpr, T* gpc,
                     const Parallel& parallel_for) {
  const int64_t window = g.size * g.size;
  const bool need_logits = gq || gk || gpr;
  // The rows of a slice form bands of `band` >= 2r rows. A band's key and
  // value gradients land on its rows and r rows on either side, so bands of
  // one parity never write the same rows: the even bands of every slice
  // run in parallel, then the odd ones. Before accumulating, even band t
  // zeroes the key and value gradient rows from its first row minus r up
  // to that of even band t + 1 (the last one: to the bottom), which covers
  // every row once and every row the odd bands write. A band reads r key
  // and value rows above and below it; bands of at least 16 rows keep
  // that re-reading small, and the bands do not depend on the thread
  // count, so neither do the results.
  const int64_t band = std::max<int64_t>(2 * g.radius, 16);
  const int64_t bands = (g.height + band - 1) / band;
  const int64_t per_phase = (bands + 1) / 2;
  const int64_t dim = g.dim, plane = g.plane, width = g.width;
  auto zero_rows = [&](T* grad, int64_t n, int64_t t) {
    if (!grad) return;
    const int64_t y0 = std::max<int64_t>(0, 2 * t * band - g.radius);
    const int64_t y1 = t + 1 == per_phase
                           ? g.height
                           : std::min(g.height, 2 * (t + 1) * band - g.radius);
    for (int64_t c = 0; c < dim && y1 > y0; ++c)
      std::fill_n(grad + (n * dim + c) * plane + y0 * width,
                  (y1 - y0) * width, T(0));
  };
  for (int64_t phase = 0; phase < 2; ++phase) {
    parallel_for(0, g.slices * per_phase, 1, [&](int64_t begin,
                                                 int64_t end) {
      Scratch<T> probs(g, 2 * window), grad_logits(g, 2 * window),
          row_term(g, 2), q_rows(g, g.dim), go_rows(g, g.dim),
          pos(g, 4 * g.size);
      WindowRows<T> keys(g), values(g);
      T* P[2] = {probs.at(0), probs.at(window)};
      T* GL[2] = {grad_logits.at(0), grad_logits.at(window)};
      T* QS = q_rows.at(0);
      T* GOS = go_rows.at(0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / per_phase;
        const int64_t first = (2 * (task % per_phase) + phase) * band;
        const int64_t stop = std::min(first + band, g.height);
        const int64_t slice = n * g.dim * g.plane, table = n * g.size * g.plane;
        if (phase == 0) {
          zero_rows(gk, n, task % per_phase);
          zero_rows(gv, n, task % per_phase);
        }
        keys.start(k + slice, first);
        values.start(v + slice, first);
        int64_t count = 1;
        for (int64_t i = first; i < stop; i += count) {
          count = i + 1 < stop ? 2 : 1;
          const RowGroup group(g, i, count);
          const T* key_window = keys.window(i, count);
          group_logits(g, group, q + slice, key_window, tables, n, i,
                       pos.at(0), P);
          for (int64_t m = 0; m < count; ++m) {
            const int64_t o0 = group.a0[m] * g.size;
            const int64_t o1 = group.a1[m] * g.size;
            const T* lse_row = lse + n * g.plane + (i + m) * g.width;
            T* Pm = P[m];
            for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
              using S = decltype(simd);
              const auto top = S::load(lse_row + j);
              for (int64_t o = o0; o < o1; ++o)
                S::store(Pm + o * g.row + j,
                         softmax_exp(S::load(Pm + o * g.row + j) - top));
            });
          }
          const T* go_row[2] = {
              go + slice + i * g.width,
              count == 2 ? go + slice + (i + 1) * g.width : nullptr};
          if (need_logits) {
            // d loss / d logit[o] = p[o] (g . v_o - g . out)
            for (int64_t m = 0; m < count; ++m) {
              const int64_t at_row = slice + (i + m) * g.width;
              T* term = row_term.at(m);
              for_vectors<T>(0, g.width, [&](int64_t j, auto simd) {
                using S = decltype(simd);
                typename S::V sum = S::fill(0);
                for (int64_t c = 0; c < g.dim; ++c)
                  sum += S::load(go + at_row + c * g.plane + j) *
                         S::load(out + at_row + c * g.plane + j);
                S::store(term + j, sum);
              });
            }
            // The positional logit gradients of row i + m (rows and
            // columns of the window summed) go to 2 k scratch rows, the
            // positional logits' (no longer needed).
            for (int64_t row = 0; row < 4 * g.size; ++row)
              std::fill_n(pos.at(row), g.width, T(0));
            window_dots<T>(
                g, group, go_row, values.window(i, count),
                [&](int64_t m, int64_t, int64_t, int64_t x, auto simd) {
                  return -decltype(simd)::load(row_term.at(m) + x);
                },
                [&](int64_t m, int64_t a, int64_t b, int64_t x, auto dot,
                    auto simd) {
                  using Vec = decltype(simd);
                  const int64_t o = (a * g.size + b) * g.row + x;
                  const auto gl = Vec::load(P[m] + o) * dot;
                  Vec::store(GL[m] + o, gl);
                  T* r = pos.at((2 * m) * g.size + a) + x;
                  T* c = pos.at((2 * m + 1) * g.size + b) + x;
                  Vec::store(r, Vec::load(r) + gl);
                  Vec::store(c, Vec::load(c) + gl);
                });
            for (int64_t m = 0; gpr && m < count; ++m) {
              for (int64_t a = 0; a < g.size; ++a) {
                const int64_t at = table + a * g.plane + (i + m) * g.width;
                std::memcpy(gpr + at, pos.at(2 * m * g.size + a),
                            g.width * sizeof(T));
                std::memcpy(gpc + at, pos.at((2 * m + 1) * g.size + a),
                            g.width * sizeof(T));
              }
            }
          }
          if (gq) {
            T* result[2] = {
                gq + slice + i * g.width,
                count == 2 ? gq + slice + (i + 1) * g.width : nullptr};
            const T* divisor[2] = {nullptr, nullptr};
            window_sums<T>(g, group, GL, key_window, result, divisor);
            // The positional part: the first half of the channels met
            // rel_h, the second rel_w.
            const int64_t h = n % tables.heads, half = g.dim / 2;
            for (int64_t m = 0; m < count; ++m) {
              for (int64_t c = 0; c < g.dim; ++c) {
                const bool rows = c < half;
                const T* table_c = (rows ? tables.rel_h : tables.rel_w) +
                                   h * half + (rows ? c : c - half);
                const T* grad_pos = pos.at((2 * m + (rows ? 0 : 1)) * g.size);
                T* gq_c = result[m] + c * g.plane;
                for_vectors<T>(0, g.width, [&](int64_t x, auto simd) {
                  using Vec = decltype(simd);
                  auto sum = Vec::load(gq_c + x);
                  for (int64_t a = 0; a < g.size; ++a)
                    sum += Vec::load(grad_pos + a * g.row + x) *
                           table_c[a * tables.heads * half];
                  Vec::store(gq_c + x, sum);
                });
              }
            }
          }
          for (int64_t m = 0; (gk || gv) && m < count; ++m) {
            const int64_t at_row = slice + (i + m) * g.width;
            for (int64_t c = 0; c < g.dim; ++c) {
              if (gk)
                std::memcpy(QS + c * g.row, q + at_row + c * g.plane,
                            g.width * sizeof(T));
              if (gv)
                std::memcpy(GOS + c * g.row, go + at_row + c * g.plane,
                            g.width * sizeof(T));
            }
            for (int64_t a = group.a0[m]; a < group.a1[m]; ++a) {
              const int64_t at_key = slice + (i + m + a - g.radius) * g.width;
              key_value_row(g, GL[m] + a * g.size * g.row,
                            P[m] + a * g.size * g.row, QS, GOS,
                            gk ? gk + at_key : nullptr,
                            gv ? gv + at_key : nullptr);
            }
          }
        }
      }
    });
  }
}

}  // namespace mmtwins_sasa
