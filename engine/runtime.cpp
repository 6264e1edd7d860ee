// Device runtime: detection, streams, allocation with byte counters, copies, the cuBLAS handle.
// CUDA detection never throws: without a driver cudaGetDeviceCount returns cudaErrorInsufficientDriver
// (not cudaErrorNoDevice) and leaves the count untouched, so every error is read as "no GPU".
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "engine/check.h"
#include "engine/device.h"
#ifdef SSLIGHT_WITH_CUDA
#include "engine/cuda_check.h"
#endif

namespace sslight {

Device Device::parse(const std::string& text) {
    if (text == "cpu") return cpu();
    if (text == "cuda") return cuda(0);
    if (text.rfind("cuda:", 0) == 0 && text.size() > 5) {
        char* end = nullptr;
        long i = std::strtol(text.c_str() + 5, &end, 10);
        if (*end == '\0' && i >= 0 && i < 1024) return cuda(static_cast<int>(i));
    }
    throw ConfigError(sslight::str("unknown device '", text, "': expected cpu, cuda or cuda:N"));
}

namespace runtime {
namespace {

struct Counters {
    std::atomic<size_t> live{0}, peak{0}, allocations{0};
    void add(size_t b) {
        size_t now = live.fetch_add(b) + b;
        size_t p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        allocations.fetch_add(1);
    }
    void sub(size_t b) { live.fetch_sub(b); }
};
constexpr int kMaxDevices = 16;
Counters g_cpu_counters;
Counters g_cuda_counters[kMaxDevices];

Counters& counters(Device d) {
    if (d.is_cpu()) return g_cpu_counters;
    SSL_CHECK_DEVICE(d.index >= 0 && d.index < kMaxDevices, "device index out of range: ", d.str());
    return g_cuda_counters[d.index];
}

// Host caching allocator. Large blocks freed by ops are kept and reused instead of going back to the
// OS: a fresh multi-megabyte allocation costs one page fault per 4 KiB page, which dominated small CPU
// ops. Sizes are rounded up to 8 classes per power of two (at most 12.5% waste); the cache holds at most
// kHostCacheLimit bytes, beyond which freed blocks are released.
class HostCache {
public:
    static constexpr size_t kMinCached = 64 * 1024;
    static constexpr size_t kHostCacheLimit = size_t(2) << 30;

    static size_t round(size_t bytes) {
        if (bytes < kMinCached) return (bytes + 63) / 64 * 64;
        size_t p = 1;
        while (p * 2 <= bytes) p *= 2;
        const size_t step = p / 8;
        return (bytes + step - 1) / step * step;
    }
    void* get(size_t rounded) {
        if (rounded >= kMinCached) {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = free_.find(rounded);
            if (it != free_.end()) {
                void* p = it->second;
                free_.erase(it);
                cached_ -= rounded;
                return p;
            }
        }
        return std::aligned_alloc(64, rounded);
    }
    void put(void* p, size_t rounded) {
        if (rounded >= kMinCached) {
            std::lock_guard<std::mutex> lock(mu_);
            if (cached_ + rounded <= kHostCacheLimit) {
                free_.emplace(rounded, p);
                cached_ += rounded;
                return;
            }
        }
        std::free(p);
    }

private:
    std::mutex mu_;
    std::multimap<size_t, void*> free_;
    size_t cached_ = 0;
};
HostCache& host_cache() {
    static HostCache* c = new HostCache();  // never destroyed: tensors may outlive static destruction
    return *c;
}

size_t rounded_size(Device d, size_t bytes) {
    if (bytes == 0) bytes = 64;
    return d.is_cpu() ? HostCache::round(bytes) : (bytes + 63) / 64 * 64;
}

#ifdef SSLIGHT_WITH_CUDA
struct CudaState {
    int count = 0;
    std::string reason;
    std::vector<cudaStream_t> streams;
    std::vector<cublasHandle_t> cublas;
};
CudaState& cuda_state() {
    static CudaState* s = [] {
        auto* st = new CudaState();
        int n = 0;
        cudaError_t err = cudaGetDeviceCount(&n);
        if (err != cudaSuccess) {
            st->reason = str("CUDA runtime reports ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
            cudaGetLastError();  // clear the sticky error
            n = 0;
        } else if (n == 0) {
            st->reason = "no CUDA device found";
        }
        st->count = n < 0 ? 0 : (n > kMaxDevices ? kMaxDevices : n);
        st->streams.assign(st->count, nullptr);
        st->cublas.assign(st->count, nullptr);
        return st;
    }();
    return *s;
}
std::mutex g_cuda_mutex;

void require_cuda(Device d) {
    CudaState& st = cuda_state();
    SSL_CHECK_DEVICE(d.index >= 0 && d.index < st.count, "device ", d.str(), " is not available (",
                     st.count, " CUDA device(s); ", st.reason, ")");
}
#endif

}  // namespace

bool cuda_built() {
#ifdef SSLIGHT_WITH_CUDA
    return true;
#else
    return false;
#endif
}

int cuda_device_count() {
#ifdef SSLIGHT_WITH_CUDA
    return cuda_state().count;
#else
    return 0;
#endif
}

std::string cuda_unavailable_reason() {
#ifdef SSLIGHT_WITH_CUDA
    return cuda_state().reason;
#else
    return "sslight was built without CUDA (SSLIGHT_CUDA=OFF or no nvcc found)";
#endif
}

Device default_device() { return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu(); }

kernels::Stream stream(Device d) {
    if (d.is_cpu()) return nullptr;
#ifdef SSLIGHT_WITH_CUDA
    require_cuda(d);
    CudaState& st = cuda_state();
    std::lock_guard<std::mutex> lock(g_cuda_mutex);
    if (!st.streams[d.index]) {
        CUDA_CHECK(cudaSetDevice(d.index));
        CUDA_CHECK(cudaStreamCreateWithFlags(&st.streams[d.index], cudaStreamNonBlocking));
    }
    return reinterpret_cast<kernels::Stream>(st.streams[d.index]);
#else
    SSL_FAIL("no CUDA support in this build: ", d.str());
#endif
}

void synchronize(Device d) {
    if (d.is_cpu()) return;
#ifdef SSLIGHT_WITH_CUDA
    CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream(d))));
#endif
}

bool sync_debug() {
    static const bool on = [] {
        const char* v = std::getenv("SSLIGHT_SYNC_DEBUG");
        return v && *v && std::strcmp(v, "0") != 0;
    }();
    return on;
}

void after_op(Device d, const char* op) {
    if (d.is_cpu() || !sync_debug()) return;
#ifdef SSLIGHT_WITH_CUDA
    cudaError_t err = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream(d)));
    if (err != cudaSuccess) {
        throw LibraryError(str("CUDA error after op ", op, " (SSLIGHT_SYNC_DEBUG): ", cudaGetErrorString(err)));
    }
#else
    (void)op;
#endif
}

void* allocate(Device d, size_t bytes) {
    const size_t rounded = rounded_size(d, bytes);
    void* p = nullptr;
    if (d.is_cpu()) {
        p = host_cache().get(rounded);
        SSL_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
    } else {
#ifdef SSLIGHT_WITH_CUDA
        require_cuda(d);
        CUDA_CHECK(cudaSetDevice(d.index));
        CUDA_CHECK(cudaMallocAsync(&p, rounded, reinterpret_cast<cudaStream_t>(stream(d))));
#else
        SSL_FAIL("no CUDA support in this build: cannot allocate on ", d.str());
#endif
    }
    counters(d).add(rounded);
    return p;
}

void deallocate(Device d, void* p, size_t bytes) {
    if (!p) return;
    const size_t rounded = rounded_size(d, bytes);
    counters(d).sub(rounded);
    if (d.is_cpu()) {
        host_cache().put(p, rounded);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    cudaFreeAsync(p, reinterpret_cast<cudaStream_t>(stream(d)));  // never throws from a destructor path
#endif
}

MemStats mem_stats(Device d) {
    Counters& c = counters(d);
    return {c.live.load(), c.peak.load(), c.allocations.load()};
}

void reset_peak(Device d) {
    Counters& c = counters(d);
    c.peak.store(c.live.load());
}

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
    if (bytes == 0) return;
    if (dst_dev.is_cpu() && src_dev.is_cpu()) {
        std::memcpy(dst, src, bytes);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    Device gpu = dst_dev.is_cuda() ? dst_dev : src_dev;
    auto s = reinterpret_cast<cudaStream_t>(stream(gpu));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
    if (dst_dev.is_cpu() || src_dev.is_cpu()) CUDA_CHECK(cudaStreamSynchronize(s));  // host memory is pageable
    if (dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev != src_dev) CUDA_CHECK(cudaDeviceSynchronize());
#else
    SSL_FAIL("no CUDA support in this build: copy between ", src_dev.str(), " and ", dst_dev.str());
#endif
}

void fill_zero(void* dst, Device d, size_t bytes) {
    if (bytes == 0) return;
    if (d.is_cpu()) {
        std::memset(dst, 0, bytes);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, reinterpret_cast<cudaStream_t>(stream(d))));
#endif
}

void* cublas_handle(Device d) {
    SSL_CHECK_DEVICE(d.is_cuda(), "cuBLAS handle requested for ", d.str());
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = stream(d);
    CudaState& st = cuda_state();
    std::lock_guard<std::mutex> lock(g_cuda_mutex);
    if (!st.cublas[d.index]) {
        CUDA_CHECK(cudaSetDevice(d.index));
        CUBLAS_CHECK(cublasCreate(&st.cublas[d.index]));
        CUBLAS_CHECK(cublasSetStream(st.cublas[d.index], reinterpret_cast<cudaStream_t>(s)));
    }
    return st.cublas[d.index];
#else
    return nullptr;
#endif
}

}  // namespace runtime
}  // namespace sslight
