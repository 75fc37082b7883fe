// Declarations of the small part of onnxruntime's stable C ABI that a
// custom-operator library uses (sasa_ort.cpp), so that the library builds
// with a C++ compiler alone: the onnxruntime Python wheel ships no headers.
//
// Only layout matters for ABI compatibility: the order of the members of
// OrtCustomOp and OrtApiBase, the slot of every function pointer in the
// OrtApi table, the parameter lists and the enum values. The slots were
// counted in onnxruntime's function table and are pinned by the
// static_asserts below; onnxruntime keeps them fixed across releases (a
// new API version only appends slots). tests/test_deploy_sasa_op.py runs
// the library in the installed onnxruntime.
//
// Requirements: C++17, x86-64 / aarch64 (pointer-sized function-pointer slots).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(_WIN32)
#define ORTABI_CALL __stdcall
#else
#define ORTABI_CALL
#endif

// ---------------------------------------------------------------------------
// Opaque handles.  ORT owns their definitions; we only ever hold pointers.
// ---------------------------------------------------------------------------
struct OrtStatus;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtShapeInferContext;
struct OrtApi;  // the function table; defined below as a slot map

// ---------------------------------------------------------------------------
// Enumerations (C enums are int-sized; values are part of the ABI).
// ---------------------------------------------------------------------------

// Status codes.  Only the ones a custom op is likely to return are named.
enum OrtErrorCode : int {
  ORT_OK = 0,
  ORT_FAIL = 1,
  ORT_INVALID_ARGUMENT = 2,
  ORT_RUNTIME_EXCEPTION = 6,
  ORT_NOT_IMPLEMENTED = 9,
};

// Tensor element types (mirror onnx TensorProto.DataType numbering).
enum ONNXTensorElementDataType : int {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,  // "any type" in a custom op schema
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 = 6,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
};

// Where an input of a custom op must live.  Default (0) = the EP's device.
enum OrtMemType : int {
  OrtMemTypeCPUInput = -2,
  OrtMemTypeCPUOutput = -1,
  OrtMemTypeDefault = 0,
};

// Per-input / per-output arity of a custom op.
enum OrtCustomOpInputOutputCharacteristic : int {
  INPUT_OUTPUT_REQUIRED = 0,
  INPUT_OUTPUT_OPTIONAL = 1,
  INPUT_OUTPUT_VARIADIC = 2,  // only the last input / last output may be variadic
};

// ---------------------------------------------------------------------------
// API versions.
// ---------------------------------------------------------------------------
// KernelContext_ParallelFor (slot 274) and OrtCustomOp::GetStartVersion /
// GetEndVersion / InferOutputShapeFn belong to API version 17 (ORT 1.17).
// Everything else used here is older (v1 / v16).  ORT's GetApi(v) accepts any
// 1 <= v <= its own ORT_API_VERSION, so 17 works on ORT >= 1.17 incl. 1.32.
constexpr std::uint32_t kOrtAbiApiVersion = 17;

// ---------------------------------------------------------------------------
// OrtApiBase: what OrtGetApiBase() returns / RegisterCustomOps receives.
// Unversioned, frozen forever: exactly two pointers.
// ---------------------------------------------------------------------------
struct OrtApiBase {
  const OrtApi*(ORTABI_CALL* GetApi)(std::uint32_t version) noexcept;
  const char*(ORTABI_CALL* GetVersionString)() noexcept;
};
static_assert(sizeof(OrtApiBase) == 2 * sizeof(void*), "OrtApiBase layout");

// ---------------------------------------------------------------------------
// OrtApi: the function table, as a slot map.
//
// The real table is an array-like struct of function pointers whose order is
// frozen per API version.  We name only the slots we call; unused runs are
// filled with opaque pointer arrays.  The static_asserts below pin every named
// member to its verified slot index, so a mis-sized gap fails to compile.
// Never create, copy or sizeof() this struct: only use the pointer ORT gives.
// ---------------------------------------------------------------------------
using OrtParallelForFn = void (*)(void* user_data, std::size_t index);

struct OrtApi {
  // --- slots 0..2
  OrtStatus*(ORTABI_CALL* CreateStatus)(OrtErrorCode code, const char* msg) noexcept;
  OrtErrorCode(ORTABI_CALL* GetErrorCode)(const OrtStatus* status) noexcept;
  const char*(ORTABI_CALL* GetErrorMessage)(const OrtStatus* status) noexcept;
  void* unused_3_25[23];

  // --- slots 26..28
  OrtStatus*(ORTABI_CALL* CreateCustomOpDomain)(const char* domain, OrtCustomOpDomain** out) noexcept;
  OrtStatus*(ORTABI_CALL* CustomOpDomain_Add)(OrtCustomOpDomain* domain, const struct OrtCustomOp* op) noexcept;
  OrtStatus*(ORTABI_CALL* AddCustomOpDomain)(OrtSessionOptions* options, OrtCustomOpDomain* domain) noexcept;
  void* unused_29_50[22];

  // --- slot 51 (takes a non-const value; for inputs, const_cast is the norm)
  OrtStatus*(ORTABI_CALL* GetTensorMutableData)(OrtValue* value, void** out) noexcept;
  void* unused_52_59[8];

  // --- slots 60..65
  OrtStatus*(ORTABI_CALL* GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info,
                                                ONNXTensorElementDataType* out) noexcept;
  OrtStatus*(ORTABI_CALL* GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, std::size_t* out) noexcept;
  OrtStatus*(ORTABI_CALL* GetDimensions)(const OrtTensorTypeAndShapeInfo* info, std::int64_t* dims,
                                         std::size_t dims_len) noexcept;
  void* unused_63[1];
  OrtStatus*(ORTABI_CALL* GetTensorShapeElementCount)(const OrtTensorTypeAndShapeInfo* info,
                                                      std::size_t* out) noexcept;
  OrtStatus*(ORTABI_CALL* GetTensorTypeAndShape)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out) noexcept;
  void* unused_66_85[20];

  // --- slot 86
  OrtStatus*(ORTABI_CALL* KernelInfoGetAttribute_int64)(const OrtKernelInfo* info, const char* name,
                                                        std::int64_t* out) noexcept;
  void* unused_87[1];

  // --- slots 88..91
  OrtStatus*(ORTABI_CALL* KernelContext_GetInputCount)(const OrtKernelContext* ctx, std::size_t* out) noexcept;
  OrtStatus*(ORTABI_CALL* KernelContext_GetOutputCount)(const OrtKernelContext* ctx, std::size_t* out) noexcept;
  OrtStatus*(ORTABI_CALL* KernelContext_GetInput)(const OrtKernelContext* ctx, std::size_t index,
                                                  const OrtValue** out) noexcept;
  // Allocates (or returns the already allocated) output `index` with the given shape.
  OrtStatus*(ORTABI_CALL* KernelContext_GetOutput)(OrtKernelContext* ctx, std::size_t index,
                                                   const std::int64_t* dims, std::size_t dims_len,
                                                   OrtValue** out) noexcept;
  void* unused_92[1];

  // --- slot 93
  void(ORTABI_CALL* ReleaseStatus)(OrtStatus* status) noexcept;
  void* unused_94_98[5];

  // --- slot 99
  void(ORTABI_CALL* ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo* info) noexcept;
  void* unused_100[1];

  // --- slot 101 (last slot of API version 1)
  void(ORTABI_CALL* ReleaseCustomOpDomain)(OrtCustomOpDomain* domain) noexcept;
  void* unused_102_273[172];

  // --- slot 274 (API version 17). Calls fn(user_data, i) for every i in
  // [0, total) on the session's intra-op pool (caller thread participates).
  // num_batch == 0: ORT picks the partitioning; otherwise at most num_batch
  // batches.  fn is a plain C function pointer and must not throw.
  OrtStatus*(ORTABI_CALL* KernelContext_ParallelFor)(const OrtKernelContext* ctx, OrtParallelForFn fn,
                                                     std::size_t total, std::size_t num_batch,
                                                     void* user_data) noexcept;
  // (slot 275 = SessionOptionsAppendExecutionProvider_OpenVINO_V2 closes v17;
  //  later slots exist in ORT 1.32 but are not declared here.)
};

#define ORTABI_SLOT(member) (offsetof(OrtApi, member) / sizeof(void*))
static_assert(ORTABI_SLOT(CreateStatus) == 0, "slot");
static_assert(ORTABI_SLOT(GetErrorCode) == 1, "slot");
static_assert(ORTABI_SLOT(GetErrorMessage) == 2, "slot");
static_assert(ORTABI_SLOT(CreateCustomOpDomain) == 26, "slot");
static_assert(ORTABI_SLOT(CustomOpDomain_Add) == 27, "slot");
static_assert(ORTABI_SLOT(AddCustomOpDomain) == 28, "slot");
static_assert(ORTABI_SLOT(GetTensorMutableData) == 51, "slot");
static_assert(ORTABI_SLOT(GetTensorElementType) == 60, "slot");
static_assert(ORTABI_SLOT(GetDimensionsCount) == 61, "slot");
static_assert(ORTABI_SLOT(GetDimensions) == 62, "slot");
static_assert(ORTABI_SLOT(GetTensorShapeElementCount) == 64, "slot");
static_assert(ORTABI_SLOT(GetTensorTypeAndShape) == 65, "slot");
static_assert(ORTABI_SLOT(KernelInfoGetAttribute_int64) == 86, "slot");
static_assert(ORTABI_SLOT(KernelContext_GetInputCount) == 88, "slot");
static_assert(ORTABI_SLOT(KernelContext_GetOutputCount) == 89, "slot");
static_assert(ORTABI_SLOT(KernelContext_GetInput) == 90, "slot");
static_assert(ORTABI_SLOT(KernelContext_GetOutput) == 91, "slot");
static_assert(ORTABI_SLOT(ReleaseStatus) == 93, "slot");
static_assert(ORTABI_SLOT(ReleaseTensorTypeAndShapeInfo) == 99, "slot");
static_assert(ORTABI_SLOT(ReleaseCustomOpDomain) == 101, "slot");  // ORT's own v1 landmark
static_assert(ORTABI_SLOT(KernelContext_ParallelFor) == 274, "slot");

// ---------------------------------------------------------------------------
// OrtCustomOp: the vtable-like struct a library fills in (one per op/type
// combination) and hands to CustomOpDomain_Add.  It must outlive every session
// that uses it.  Members in ABI order; comments give the OrtCustomOp::version
// from which ORT reads the member.
// ---------------------------------------------------------------------------
struct OrtCustomOp {
  std::uint32_t version;  // set to kOrtAbiApiVersion; ORT gates members on this

  // v1: legacy kernel factory (used only when CreateKernelV2 is null / version < 16)
  void*(ORTABI_CALL* CreateKernel)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char*(ORTABI_CALL* GetName)(const OrtCustomOp* op);
  // nullptr => CPUExecutionProvider
  const char*(ORTABI_CALL* GetExecutionProviderType)(const OrtCustomOp* op);
  ONNXTensorElementDataType(ORTABI_CALL* GetInputType)(const OrtCustomOp* op, std::size_t index);
  std::size_t(ORTABI_CALL* GetInputTypeCount)(const OrtCustomOp* op);
  ONNXTensorElementDataType(ORTABI_CALL* GetOutputType)(const OrtCustomOp* op, std::size_t index);
  std::size_t(ORTABI_CALL* GetOutputTypeCount)(const OrtCustomOp* op);
  // v1: legacy compute (used only when KernelComputeV2 is null / version < 16)
  void(ORTABI_CALL* KernelCompute)(void* kernel, OrtKernelContext* ctx);
  // always called (must be non-null)
  void(ORTABI_CALL* KernelDestroy)(void* kernel);

  // v8: optional inputs/outputs (ORT calls these unconditionally in IsCompatible)
  OrtCustomOpInputOutputCharacteristic(ORTABI_CALL* GetInputCharacteristic)(const OrtCustomOp* op,
                                                                             std::size_t index);
  OrtCustomOpInputOutputCharacteristic(ORTABI_CALL* GetOutputCharacteristic)(const OrtCustomOp* op,
                                                                              std::size_t index);
  // v13: called for every input when version > 12 (must be non-null)
  OrtMemType(ORTABI_CALL* GetInputMemoryType)(const OrtCustomOp* op, std::size_t index);
  // v14: only called for a variadic last input / output
  int(ORTABI_CALL* GetVariadicInputMinArity)(const OrtCustomOp* op);
  int(ORTABI_CALL* GetVariadicInputHomogeneity)(const OrtCustomOp* op);
  int(ORTABI_CALL* GetVariadicOutputMinArity)(const OrtCustomOp* op);
  int(ORTABI_CALL* GetVariadicOutputHomogeneity)(const OrtCustomOp* op);

  // v16: status-returning kernel factory / compute (preferred when non-null)
  OrtStatus*(ORTABI_CALL* CreateKernelV2)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                          void** kernel);
  OrtStatus*(ORTABI_CALL* KernelComputeV2)(void* kernel, OrtKernelContext* ctx);

  // v17: all three are null-checked by ORT
  OrtStatus*(ORTABI_CALL* InferOutputShapeFn)(const OrtCustomOp* op, OrtShapeInferContext* ctx);
  int(ORTABI_CALL* GetStartVersion)(const OrtCustomOp* op);
  int(ORTABI_CALL* GetEndVersion)(const OrtCustomOp* op);

  // v18 / later: in-place and alias hints.  Declared so the struct has the
  // full current size; leave null (with version 17 ORT does not read them).
  std::size_t(ORTABI_CALL* GetMayInplace)(int** input_index, int** output_index);
  void(ORTABI_CALL* ReleaseMayInplace)(int* input_index, int* output_index);
  std::size_t(ORTABI_CALL* GetAliasMap)(int** input_index, int** output_index);
  void(ORTABI_CALL* ReleaseAliasMap)(int* input_index, int* output_index);
};
static_assert(offsetof(OrtCustomOp, CreateKernel) == sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, KernelDestroy) == 9 * sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, CreateKernelV2) == 17 * sizeof(void*), "OrtCustomOp layout");
static_assert(offsetof(OrtCustomOp, GetEndVersion) == 21 * sizeof(void*), "OrtCustomOp layout");
static_assert(sizeof(OrtCustomOp) == 26 * sizeof(void*), "OrtCustomOp layout");

// Entry point ORT looks up (dlsym) in a library given to
// SessionOptions.register_custom_ops_library / RegisterCustomOpsLibrary.
extern "C" OrtStatus* ORTABI_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base);
