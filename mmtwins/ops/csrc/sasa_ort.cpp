// SASA's k x k local attention as an onnxruntime custom operator:
// mmtwins.SASAttention (domain "mmtwins", version 1) for the CPU execution
// provider, running the fused kernel of sasa_kernel.h (the PyTorch op's)
// on the session's intra-op thread pool.
//
//   inputs:  query, key, value  float32 (B, heads, D, H, W)
//            rel_h, rel_w       float32 (k, heads, D / 2), k odd
//   outputs: output             float32 (B, heads, D, H, W)
//            lse                float32 (B, heads, H, W), the log-sum-exp
//                               of each pixel's logits
//
// Bad inputs give an ORT_INVALID_ARGUMENT status naming the problem;
// nothing is thrown across the C ABI. The library's entry point is
// RegisterCustomOps (onnxruntime >= 1.17, API version 17).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "ort_abi.h"
#include "sasa_kernel.h"

namespace {

using mmtwins_sasa::Geometry;
using mmtwins_sasa::kVectorBytes;
using mmtwins_sasa::Tables;

constexpr const char* kDomain = "mmtwins";
constexpr const char* kOpName = "SASAttention";

#define SASA_RETURN_IF_ERROR(expr)     \
  do {                                 \
    OrtStatus* status_ = (expr);       \
    if (status_) return status_;       \
  } while (0)

OrtStatus* dims_of(const OrtApi* api, const OrtValue* value,
                   std::vector<int64_t>* dims,
                   ONNXTensorElementDataType* type) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  SASA_RETURN_IF_ERROR(api->GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* status = api->GetTensorElementType(info, type);
  if (!status) status = api->GetDimensionsCount(info, &rank);
  if (!status) {
    dims->assign(rank, 0);
    status = api->GetDimensions(info, dims->data(), rank);
  }
  api->ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string text = "(";
  for (size_t i = 0; i < dims.size(); ++i)
    text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + (dims.size() == 1 ? ",)" : ")");
}

// The kernel's parallel_for(begin, end, grain, f) on onnxruntime's pool:
// [begin, end) is cut into at most one piece per hardware thread (and
// pieces of at least `grain`), each handed to KernelContext_ParallelFor as
// one task; an exception in a task (e.g. std::bad_alloc of its scratch)
// is kept and reported as a status.
struct OrtParallel {
  const OrtApi* api;
  OrtKernelContext* context;
  mutable OrtStatus* status = nullptr;
  mutable std::string failure;

  template <typename F>
  struct Job {
    const F* f;
    int64_t begin, end, pieces;
    std::atomic<bool> failed{false};
    std::mutex lock;
    std::string what;
  };

  template <typename F>
  static void run(void* data, size_t index) {
    auto* job = static_cast<Job<F>*>(data);
    const int64_t count = job->end - job->begin;
    const int64_t i = static_cast<int64_t>(index);
    const int64_t from = job->begin + count * i / job->pieces;
    const int64_t to = job->begin + count * (i + 1) / job->pieces;
    if (from >= to || job->failed.load()) return;
    try {
      (*job->f)(from, to);
    } catch (const std::exception& error) {
      std::lock_guard<std::mutex> guard(job->lock);
      job->failed = true;
      job->what = error.what();
    } catch (...) {
      std::lock_guard<std::mutex> guard(job->lock);
      job->failed = true;
      job->what = "unknown error";
    }
  }

  template <typename F>
  void operator()(int64_t begin, int64_t end, int64_t grain,
                  const F& f) const {
    if (status || !failure.empty() || end <= begin) return;
    const int64_t threads =
        std::max<int64_t>(1, std::thread::hardware_concurrency());
    const int64_t pieces = std::max<int64_t>(
        1, std::min(threads, (end - begin + grain - 1) / grain));
    Job<F> job;
    job.f = &f;
    job.begin = begin;
    job.end = end;
    job.pieces = pieces;
    status = api->KernelContext_ParallelFor(context, &run<F>, pieces, 0,
                                            &job);
    if (job.failed) failure = job.what;
  }
};

OrtStatus* compute(const OrtApi* api, OrtKernelContext* context) {
  const OrtValue* inputs[5];
  std::vector<int64_t> dims[5];
  static const char* names[5] = {"query", "key", "value", "rel_h", "rel_w"};
  for (size_t i = 0; i < 5; ++i) {
    SASA_RETURN_IF_ERROR(api->KernelContext_GetInput(context, i, &inputs[i]));
    ONNXTensorElementDataType type;
    SASA_RETURN_IF_ERROR(dims_of(api, inputs[i], &dims[i], &type));
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      return api->CreateStatus(
          ORT_INVALID_ARGUMENT,
          (std::string(kOpName) + ": " + names[i] + " must be float32")
              .c_str());
  }
  const std::vector<int64_t>& q = dims[0];
  const std::vector<int64_t>& table = dims[3];
  auto bad = [&](const std::string& what) {
    const std::string text = std::string(kOpName) + ": " + what +
                             " (query " + shape_text(q) + ", rel_h " +
                             shape_text(table) + ")";
    return api->CreateStatus(ORT_INVALID_ARGUMENT, text.c_str());
  };
  if (q.size() != 5)
    return bad("query, key and value must be (B, heads, D, H, W)");
  if (dims[1] != q || dims[2] != q)
    return bad("key " + shape_text(dims[1]) + " and value " +
               shape_text(dims[2]) + " must have the query's shape");
  if (table.size() != 3 || dims[4] != table || table[0] % 2 == 0 ||
      table[1] != q[1] || 2 * table[2] != q[2])
    return bad("rel_h and rel_w must be (k, heads, D / 2) with k odd");

  const int64_t out_dims[5] = {q[0], q[1], q[2], q[3], q[4]};
  const int64_t lse_dims[4] = {q[0], q[1], q[3], q[4]};
  OrtValue* out_value = nullptr;
  OrtValue* lse_value = nullptr;
  SASA_RETURN_IF_ERROR(
      api->KernelContext_GetOutput(context, 0, out_dims, 5, &out_value));
  SASA_RETURN_IF_ERROR(
      api->KernelContext_GetOutput(context, 1, lse_dims, 4, &lse_value));
  if (q[0] * q[1] * q[2] * q[3] * q[4] == 0) return nullptr;

  void* data[7];
  for (size_t i = 0; i < 5; ++i)
    SASA_RETURN_IF_ERROR(api->GetTensorMutableData(
        const_cast<OrtValue*>(inputs[i]), &data[i]));
  SASA_RETURN_IF_ERROR(api->GetTensorMutableData(out_value, &data[5]));
  SASA_RETURN_IF_ERROR(api->GetTensorMutableData(lse_value, &data[6]));

  const Geometry g(q[0] * q[1], q[2], q[3], q[4], table[0],
                   kVectorBytes / sizeof(float));
  const Tables<float> tables{static_cast<const float*>(data[3]),
                             static_cast<const float*>(data[4]), q[1]};
  OrtParallel parallel{api, context};
  mmtwins_sasa::forward_kernel<float>(
      g, static_cast<const float*>(data[0]),
      static_cast<const float*>(data[1]), static_cast<const float*>(data[2]),
      tables, static_cast<float*>(data[5]), static_cast<float*>(data[6]),
      parallel);
  if (parallel.status) return parallel.status;
  if (!parallel.failure.empty())
    return api->CreateStatus(
        ORT_RUNTIME_EXCEPTION,
        (std::string(kOpName) + ": " + parallel.failure).c_str());
  return nullptr;
}

// OrtCustomOp callbacks. The kernel object is the OrtApi table itself.
OrtStatus* ORTABI_CALL create_kernel(const OrtCustomOp*, const OrtApi* api,
                                     const OrtKernelInfo*, void** kernel) {
  *kernel = const_cast<OrtApi*>(api);
  return nullptr;
}

OrtStatus* ORTABI_CALL kernel_compute(void* kernel,
                                      OrtKernelContext* context) {
  const OrtApi* api = static_cast<const OrtApi*>(kernel);
  try {
    return compute(api, context);
  } catch (const std::exception& error) {
    return api->CreateStatus(
        ORT_RUNTIME_EXCEPTION,
        (std::string(kOpName) + ": " + error.what()).c_str());
  } catch (...) {
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, "SASAttention failed");
  }
}

void ORTABI_CALL kernel_destroy(void*) {}
const char* ORTABI_CALL op_name(const OrtCustomOp*) { return kOpName; }
const char* ORTABI_CALL op_provider(const OrtCustomOp*) { return nullptr; }
size_t ORTABI_CALL input_count(const OrtCustomOp*) { return 5; }
size_t ORTABI_CALL output_count(const OrtCustomOp*) { return 2; }
ONNXTensorElementDataType ORTABI_CALL float_type(const OrtCustomOp*,
                                                 size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
OrtCustomOpInputOutputCharacteristic ORTABI_CALL required(const OrtCustomOp*,
                                                          size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORTABI_CALL default_memory(const OrtCustomOp*, size_t) {
  return OrtMemTypeDefault;
}
int ORTABI_CALL one(const OrtCustomOp*) { return 1; }

OrtCustomOp make_op() {
  OrtCustomOp op{};
  op.version = kOrtAbiApiVersion;
  op.GetName = &op_name;
  op.GetExecutionProviderType = &op_provider;
  op.GetInputType = &float_type;
  op.GetInputTypeCount = &input_count;
  op.GetOutputType = &float_type;
  op.GetOutputTypeCount = &output_count;
  op.KernelDestroy = &kernel_destroy;
  op.GetInputCharacteristic = &required;
  op.GetOutputCharacteristic = &required;
  op.GetInputMemoryType = &default_memory;
  op.GetVariadicInputMinArity = &one;
  op.GetVariadicInputHomogeneity = &one;
  op.GetVariadicOutputMinArity = &one;
  op.GetVariadicOutputHomogeneity = &one;
  op.CreateKernelV2 = &create_kernel;
  op.KernelComputeV2 = &kernel_compute;
  return op;
}

// Both must outlive every session that uses them: onnxruntime does not
// take ownership of a domain, so each registration's domain is kept for
// the life of the process.
const OrtCustomOp sasa_op = make_op();
std::mutex domains_lock;
std::vector<OrtCustomOpDomain*>* domains =
    new std::vector<OrtCustomOpDomain*>();

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORTABI_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kOrtAbiApiVersion);
  if (!api) {
    const OrtApi* first = base->GetApi(1);
    return first ? first->CreateStatus(
                       ORT_FAIL,
                       "the mmtwins operator library needs onnxruntime >= "
                       "1.17")
                 : nullptr;
  }
  OrtCustomOpDomain* domain = nullptr;
  SASA_RETURN_IF_ERROR(api->CreateCustomOpDomain(kDomain, &domain));
  OrtStatus* status = api->CustomOpDomain_Add(domain, &sasa_op);
  if (!status) status = api->AddCustomOpDomain(options, domain);
  if (status) {
    api->ReleaseCustomOpDomain(domain);
    return status;
  }
  std::lock_guard<std::mutex> guard(domains_lock);
  domains->push_back(domain);
  return nullptr;
}
