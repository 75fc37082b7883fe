// PyTorch bindings of the fused CPU kernel of SASA's k x k local attention
// (mmtwins::sasa_attention): input checks, dtypes and allocation; the
// kernel itself is sasa_kernel.h, run on ATen's intra-op threads
// (at::parallel_for, i.e. as many as torch.get_num_threads()).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <vector>

#include "sasa_kernel.h"

namespace {

using namespace mmtwins_sasa;

// The kernels' parallel_for: ATen's intra-op pool.
struct AtenParallel {
  template <typename F>
  void operator()(int64_t begin, int64_t end, int64_t grain,
                  const F& f) const {
    at::parallel_for(begin, end, grain, f);
  }
};

void check_inputs(const std::vector<at::Tensor>& tensors, int64_t dim) {
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.dim() == dim,
                "sasa_cpu: expects CPU tensors of ", dim, " dimensions");
    TORCH_CHECK(t.scalar_type() == tensors[0].scalar_type(),
                "sasa_cpu: expects tensors of one dtype");
  }
}

// rel_h and rel_w: (k, heads, D / 2) for q of (N, D, H, W), N a multiple
// of heads.
void check_tables(const at::Tensor& q, const at::Tensor& rel_h,
                  const at::Tensor& rel_w) {
  TORCH_CHECK(rel_h.device().is_cpu() && rel_h.dim() == 3 &&
                  rel_h.sizes() == rel_w.sizes() &&
                  rel_h.scalar_type() == q.scalar_type() &&
                  rel_w.scalar_type() == q.scalar_type() &&
                  rel_h.size(1) > 0 && q.size(0) % rel_h.size(1) == 0 &&
                  2 * rel_h.size(2) == q.size(1),
              "sasa_cpu: expects rel_h and rel_w of shape (k, heads, D / 2) "
              "in q's dtype");
}

// How the kernel holds a tensor: float64 stays, every other float type is
// computed in float32.
at::Tensor compute(const at::Tensor& t) {
  const auto type =
      t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return t.to(type).contiguous();
}

int64_t lanes_of(const at::Tensor& t) {
  return kVectorBytes / at::elementSize(t.scalar_type());
}

}  // namespace

// q, k, v: (N, D, H, W) with N = batch * heads; rel_h, rel_w: the offset
// embeddings (k, heads, D / 2).
// Returns out (N, D, H, W) and the log-sum-exp (N, H, W) in q's dtype.
std::vector<at::Tensor> sasa_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v,
                                     const at::Tensor& rel_h,
                                     const at::Tensor& rel_w) {
  check_inputs({q, k, v}, 4);
  check_tables(q, rel_h, rel_w);
  auto q_c = compute(q), th = compute(rel_h), tw = compute(rel_w);
  auto out = at::empty_like(q_c);
  auto lse = at::empty({q.size(0), q.size(2), q.size(3)}, q_c.options());
  if (q.numel() > 0) {
    const Geometry g(q_c.size(0), q_c.size(1), q_c.size(2), q_c.size(3),
                   rel_h.size(0), lanes_of(q_c));
    auto k_c = compute(k), v_c = compute(v);
    AT_DISPATCH_FLOATING_TYPES(q_c.scalar_type(), "sasa_forward", [&] {
      const Tables<scalar_t> tables{th.data_ptr<scalar_t>(),
                                    tw.data_ptr<scalar_t>(), rel_h.size(1)};
      forward_kernel<scalar_t>(
          g, q_c.data_ptr<scalar_t>(), k_c.data_ptr<scalar_t>(),
          v_c.data_ptr<scalar_t>(), tables, out.data_ptr<scalar_t>(),
          lse.data_ptr<scalar_t>(), AtenParallel{});
    });
  }
  return {out.to(q.scalar_type()), lse.to(q.scalar_type())};
}

// Gradients for q, k, v and the positional logits pos_row and pos_col
// (N, k, H, W; for the offset embeddings' gradients), in float32 for half
// and bfloat16 inputs (q's dtype otherwise); an entry whose flag is false
// is an empty tensor. The arguments are the forward's, then its outputs.
std::vector<at::Tensor> sasa_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& rel_h, const at::Tensor& rel_w,
    const at::Tensor& out, const at::Tensor& lse, bool need_q, bool need_k,
    bool need_v, bool need_pos) {
  check_inputs({grad_out, q, k, v, out}, 4);
  check_tables(q, rel_h, rel_w);
  TORCH_CHECK(lse.dim() == 3 && lse.scalar_type() == q.scalar_type(),
              "sasa_cpu: bad log-sum-exp tensor");
  auto go_c = compute(grad_out), q_c = compute(q), th = compute(rel_h),
       tw = compute(rel_w), out_c = compute(out), lse_c = compute(lse);
  const auto options = q_c.options();
  const std::vector<int64_t> pos_shape{q.size(0), rel_h.size(0), q.size(2),
                                       q.size(3)};
  const bool any = need_q || need_k || need_v || need_pos;
  if (q.numel() == 0 || !any) {
    auto make = [&](bool need, at::IntArrayRef sizes) {
      return need ? at::zeros(sizes, options) : at::empty({0}, options);
    };
    return {make(need_q, q.sizes()), make(need_k, k.sizes()),
            make(need_v, v.sizes()), make(need_pos, pos_shape),
            make(need_pos, pos_shape)};
  }
  const Geometry g(q_c.size(0), q_c.size(1), q_c.size(2), q_c.size(3),
                   rel_h.size(0), lanes_of(q_c));
  auto k_c = compute(k), v_c = compute(v);
  const auto none = at::empty({0}, options);
  at::Tensor gq = need_q ? at::empty_like(q_c) : none,
             gk = need_k ? at::empty_like(q_c) : none,
             gv = need_v ? at::empty_like(q_c) : none,
             gpr = need_pos ? at::empty(pos_shape, options) : none,
             gpc = need_pos ? at::empty(pos_shape, options) : none;
  AT_DISPATCH_FLOATING_TYPES(q_c.scalar_type(), "sasa_backward", [&] {
    auto ptr = [](at::Tensor& t, bool need) {
      return need ? t.data_ptr<scalar_t>() : nullptr;
    };
    const Tables<scalar_t> tables{th.data_ptr<scalar_t>(),
                                  tw.data_ptr<scalar_t>(), rel_h.size(1)};
    backward_kernel<scalar_t>(
        g, go_c.data_ptr<scalar_t>(), q_c.data_ptr<scalar_t>(),
        k_c.data_ptr<scalar_t>(), v_c.data_ptr<scalar_t>(), tables,
        out_c.data_ptr<scalar_t>(), lse_c.data_ptr<scalar_t>(),
        ptr(gq, need_q), ptr(gk, need_k), ptr(gv, need_v),
        ptr(gpr, need_pos), ptr(gpc, need_pos), AtenParallel{});
  });
  return {gq, gk, gv, gpr, gpc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sasa_forward, "SASA local attention forward (CPU)");
  m.def("backward", &sasa_backward, "SASA local attention backward (CPU)");
}
