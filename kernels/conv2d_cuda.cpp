// cuDNN (v9 legacy API) grouped 2-D convolution on NHWC tensors with KRSC (OHWI) filters: forward,
// backward data and backward filter, f32 (FMA math: exact f32, unless allow_tf32) and bf16 (tensor-op
// math, f32 compute). One cuDNN handle per device, bound to the runtime's compute stream. The algorithm of
// each direction is chosen once per (device, dtype, shape, args) with cudnnFind*AlgorithmEx on the op's own
// buffers (the fastest deterministic algorithm that fits kMaxWorkspace) and cached with its descriptors;
// call it once outside CUDA-graph capture. Workspace comes from the engine's stream-ordered allocator.
// Every launcher writes (=) its output; bias is added by the op (see kernels/conv2d.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/device.h"
#include "kernels/conv2d.h"

namespace sslight::kernels::cuda {

#ifdef SSLIGHT_WITH_CUDNN
namespace {

constexpr size_t kMaxWorkspace = size_t(512) << 20;
constexpr int kMaxDevices = 16;

template <class T>
cudnnDataType_t cudnn_type();
template <>
cudnnDataType_t cudnn_type<float>() {
    return CUDNN_DATA_FLOAT;
}
template <>
cudnnDataType_t cudnn_type<bf16>() {
    return CUDNN_DATA_BFLOAT16;
}

std::mutex g_mutex;

cudnnHandle_t handle_for(int device) {
    static auto* handles = new std::vector<cudnnHandle_t>(kMaxDevices, nullptr);  // never destroyed: outlives exit
    auto stream = reinterpret_cast<cudaStream_t>(runtime::stream(Device::cuda(device)));  // validates `device`
    std::lock_guard<std::mutex> lock(g_mutex);
    cudnnHandle_t& h = (*handles)[device];
    if (!h) {
        CUDNN_CHECK(cudnnCreate(&h));
        CUDNN_CHECK(cudnnSetStream(h, stream));
    }
    return h;
}

// Device memory from the engine allocator, released (stream-ordered) when the scope ends.
struct Workspace {
    int device;
    size_t bytes;
    void* ptr = nullptr;
    Workspace(int dev, size_t n) : device(dev), bytes(n) {
        if (n) ptr = runtime::allocate(Device::cuda(dev), n);
    }
    ~Workspace() { runtime::deallocate(Device::cuda(device), ptr, bytes); }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;
};

struct Choice {
    bool found = false;
    int algo = 0;
    size_t workspace = 0;
};

// Descriptors of one (device, dtype, shape, args) and the algorithm chosen for each direction. Each
// direction has its own convolution descriptor because the math type belongs to the chosen algorithm.
struct Plan {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    std::array<cudnnConvolutionDescriptor_t, 3> conv{};  // forward, backward data, backward filter
    std::array<Choice, 3> choice;
    cudnnMathType_t requested_math = CUDNN_DEFAULT_MATH;
    bool exact_f32 = false;  // f32 without TF32: keep FMA math whatever the search reports
};
enum Dir { kFwd = 0, kBwdData = 1, kBwdFilter = 2 };

using PlanKey = std::array<int64_t, 19>;

int to_int(int64_t v, const char* what) {
    SSL_CHECK(v >= 0 && v <= 0x7fffffff, "conv2d (cuDNN): ", what, " = ", v, " does not fit a 32-bit int");
    return static_cast<int>(v);
}

template <class T>
Plan* plan_for(const Conv2dParams& p, int device) {
    static auto* plans = new std::map<PlanKey, Plan*>();  // never destroyed: outlives exit
    const PlanKey key{device, int64_t(cudnn_type<T>()), p.N, p.H, p.W, p.C, p.K, p.kh, p.kw, p.stride_h,
                      p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups, p.allow_tf32, p.Ho, p.Wo};
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = plans->find(key);
    if (it != plans->end()) return it->second;
    to_int(p.N * p.H * p.W * p.C, "input elements");
    to_int(p.N * p.Ho * p.Wo * p.K, "output elements");
    auto* pl = new Plan();
    const cudnnDataType_t dt = cudnn_type<T>();
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl->w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->x, CUDNN_TENSOR_NHWC, dt, int(p.N), int(p.C), int(p.H), int(p.W)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->y, CUDNN_TENSOR_NHWC, dt, int(p.N), int(p.K), int(p.Ho), int(p.Wo)));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl->w, dt, CUDNN_TENSOR_NHWC, int(p.K), int(p.Cg()), int(p.kh), int(p.kw)));
    pl->exact_f32 = std::is_same<T, float>::value && !p.allow_tf32;
    pl->requested_math = std::is_same<T, float>::value ? (p.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH)
                                                       : CUDNN_TENSOR_OP_MATH;
    for (auto& c : pl->conv) {
        CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c));
        CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c, int(p.pad_h), int(p.pad_w), int(p.stride_h), int(p.stride_w),
                                                    int(p.dil_h), int(p.dil_w), CUDNN_CROSS_CORRELATION,
                                                    CUDNN_DATA_FLOAT));
        CUDNN_CHECK(cudnnSetConvolutionGroupCount(c, int(p.groups)));
        CUDNN_CHECK(cudnnSetConvolutionMathType(c, pl->requested_math));
    }
    (*plans)[key] = pl;
    return pl;
}

// Picks, among the search results (sorted fastest first), the fastest deterministic one that succeeded
// and fits `limit`, else the fastest that succeeded; sets the direction's math type to the one it used.
template <class Perf>
void choose(Plan* pl, Dir dir, const Perf* perf, int n, size_t limit, const char* what) {
    int pick = -1;
    for (int pass = 0; pass < 2 && pick < 0; ++pass) {
        for (int i = 0; i < n && pick < 0; ++i) {
            const bool ok = perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit;
            if (ok && (pass == 1 || perf[i].determinism == CUDNN_DETERMINISTIC)) pick = i;
        }
    }
    SSL_CHECK(pick >= 0, "conv2d (cuDNN): no ", what, " algorithm works for this shape within ", limit >> 20,
              " MiB of workspace");
    Choice& c = pl->choice[dir];
    c.algo = static_cast<int>(perf[pick].algo);
    c.workspace = perf[pick].memory;
    if (!pl->exact_f32) CUDNN_CHECK(cudnnSetConvolutionMathType(pl->conv[dir], perf[pick].mathType));
    c.found = true;
}

// The largest workspace any algorithm of a direction asks for, capped at kMaxWorkspace.
template <class SizeFn>
size_t search_workspace(int algo_count, SizeFn size_of) {
    size_t most = 0;
    for (int a = 0; a < algo_count; ++a) {
        size_t bytes = 0;
        if (size_of(a, &bytes) == CUDNN_STATUS_SUCCESS && bytes <= kMaxWorkspace) most = std::max(most, bytes);
    }
    return most;
}

void find_fwd(cudnnHandle_t h, Plan* pl, int device, const void* x, const void* w, void* y) {
    const cudnnConvolutionDescriptor_t conv = pl->conv[kFwd];
    const size_t limit = search_workspace(CUDNN_CONVOLUTION_FWD_ALGO_COUNT, [&](int a, size_t* b) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, pl->x, pl->w, conv, pl->y, cudnnConvolutionFwdAlgo_t(a), b);
    });
    Workspace ws(device, limit);
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, pl->x, x, pl->w, w, conv, pl->y, y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf, ws.ptr, limit));
    choose(pl, kFwd, perf, n, limit, "forward");
}

void find_bwd_data(cudnnHandle_t h, Plan* pl, int device, const void* dy, const void* w, void* dx) {
    const cudnnConvolutionDescriptor_t conv = pl->conv[kBwdData];
    const size_t limit = search_workspace(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, [&](int a, size_t* b) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, pl->w, pl->y, conv, pl->x,
                                                            cudnnConvolutionBwdDataAlgo_t(a), b);
    });
    Workspace ws(device, limit);
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, pl->w, w, pl->y, dy, conv, pl->x, dx,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf, ws.ptr,
                                                            limit));
    choose(pl, kBwdData, perf, n, limit, "backward-data");
}

void find_bwd_filter(cudnnHandle_t h, Plan* pl, int device, const void* x, const void* dy, void* dw) {
    const cudnnConvolutionDescriptor_t conv = pl->conv[kBwdFilter];
    const size_t limit = search_workspace(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, [&](int a, size_t* b) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, pl->x, pl->y, conv, pl->w,
                                                              cudnnConvolutionBwdFilterAlgo_t(a), b);
    });
    Workspace ws(device, limit);
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, pl->x, x, pl->y, dy, conv, pl->w, dw,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf,
                                                              ws.ptr, limit));
    choose(pl, kBwdFilter, perf, n, limit, "backward-filter");
}

// Serialises the one-time search of a plan's direction (it benchmarks on the device).
std::mutex g_find_mutex;

}  // namespace

bool conv2d_cudnn_available() { return true; }

template <class T>
void conv2d_fwd(const Conv2dParams& p, const T* x, const T* w, T* y, int device) {
    CUDA_CHECK(cudaSetDevice(device));
    cudnnHandle_t h = handle_for(device);
    Plan* pl = plan_for<T>(p, device);
    {
        std::lock_guard<std::mutex> lock(g_find_mutex);
        if (!pl->choice[kFwd].found) find_fwd(h, pl, device, x, w, y);
    }
    const Choice& c = pl->choice[kFwd];
    Workspace ws(device, c.workspace);
    const float alpha = 1.f, beta = 0.f;
    CUDNN_CHECK(cudnnConvolutionForward(h, &alpha, pl->x, x, pl->w, w, pl->conv[kFwd],
                                        cudnnConvolutionFwdAlgo_t(c.algo), ws.ptr, c.workspace, &beta, pl->y, y));
}

template <class T>
void conv2d_bwd_data(const Conv2dParams& p, const T* dy, const T* w, T* dx, int device) {
    CUDA_CHECK(cudaSetDevice(device));
    cudnnHandle_t h = handle_for(device);
    Plan* pl = plan_for<T>(p, device);
    {
        std::lock_guard<std::mutex> lock(g_find_mutex);
        if (!pl->choice[kBwdData].found) find_bwd_data(h, pl, device, dy, w, dx);
    }
    const Choice& c = pl->choice[kBwdData];
    Workspace ws(device, c.workspace);
    const float alpha = 1.f, beta = 0.f;
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, &alpha, pl->w, w, pl->y, dy, pl->conv[kBwdData],
                                             cudnnConvolutionBwdDataAlgo_t(c.algo), ws.ptr, c.workspace, &beta,
                                             pl->x, dx));
}

template <class T>
void conv2d_bwd_weight(const Conv2dParams& p, const T* x, const T* dy, T* dw, int device) {
    CUDA_CHECK(cudaSetDevice(device));
    cudnnHandle_t h = handle_for(device);
    Plan* pl = plan_for<T>(p, device);
    {
        std::lock_guard<std::mutex> lock(g_find_mutex);
        if (!pl->choice[kBwdFilter].found) find_bwd_filter(h, pl, device, x, dy, dw);
    }
    const Choice& c = pl->choice[kBwdFilter];
    Workspace ws(device, c.workspace);
    const float alpha = 1.f, beta = 0.f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &alpha, pl->x, x, pl->y, dy, pl->conv[kBwdFilter],
                                               cudnnConvolutionBwdFilterAlgo_t(c.algo), ws.ptr, c.workspace, &beta,
                                               pl->w, dw));
}

#else  // no cuDNN in this build

namespace {
[[noreturn]] void no_cudnn(int device) {
    SSL_FAIL("conv2d on cuda:", device, " needs cuDNN, which this build did not find (libcudnn.so / cudnn.h in the "
             "CUDA toolkit directories): install cuDNN 9 and reconfigure, or run the convolution on the CPU");
}
}  // namespace

bool conv2d_cudnn_available() { return false; }
template <class T>
void conv2d_fwd(const Conv2dParams&, const T*, const T*, T*, int device) {
    no_cudnn(device);
}
template <class T>
void conv2d_bwd_data(const Conv2dParams&, const T*, const T*, T*, int device) {
    no_cudnn(device);
}
template <class T>
void conv2d_bwd_weight(const Conv2dParams&, const T*, const T*, T*, int device) {
    no_cudnn(device);
}

#endif

template void conv2d_fwd<float>(const Conv2dParams&, const float*, const float*, float*, int);
template void conv2d_fwd<bf16>(const Conv2dParams&, const bf16*, const bf16*, bf16*, int);
template void conv2d_bwd_data<float>(const Conv2dParams&, const float*, const float*, float*, int);
template void conv2d_bwd_data<bf16>(const Conv2dParams&, const bf16*, const bf16*, bf16*, int);
template void conv2d_bwd_weight<float>(const Conv2dParams&, const float*, const float*, float*, int);
template void conv2d_bwd_weight<bf16>(const Conv2dParams&, const bf16*, const bf16*, bf16*, int);

}  // namespace sslight::kernels::cuda
