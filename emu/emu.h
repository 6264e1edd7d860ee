// CPU SIMT emulation of CUDA kernels: makes ordinary kernel source compile under a host C++17 compiler and
// run with CUDA semantics. Each block's threads are cooperative fibers that switch only at barriers and warp
// operations; blocks run in a seeded shuffled order. Out-of-bounds accesses to emu::Buffer memory, divergent
// barriers and warp operations whose lanes never all arrive are reported naming the kernel.
// Usage and limits: emu/README.md. Included by kernels/common.cuh when SSLIGHT_EMU is defined.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- Execution-space qualifiers. host_defines.h leaves __global__/__device__/__host__/__shared__ empty and
// __forceinline__ as always_inline under a host compiler; the rest is defined here.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __grid_constant__
#define __grid_constant__
#endif
// libstdc++ spells `__attribute__((__noinline__))` in <bits/shared_ptr_base.h>: <memory> is included above,
// before this definition, so that header is already behind its include guard.
#undef __noinline__
#define __noinline__ __attribute__((noinline))
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
// Static shared memory is thread_local: all fibers of a block run on one OS thread, blocks that run at the
// same time run on different OS threads. The leading dummy constant absorbs a `static` in front of
// `__shared__`; `extern __shared__ T name[]` cannot be emulated (the name is chosen by the kernel) and is
// rejected at compile time: use sslight::emu::dynamic_smem<T>() (see README).
#define SSLIGHT_EMU_CAT2(a, b) a##b
#define SSLIGHT_EMU_CAT(a, b) SSLIGHT_EMU_CAT2(a, b)
#undef __shared__
#define __shared__                                                                                       \
    __attribute__((unused)) constexpr int SSLIGHT_EMU_CAT(emu_extern_shared_is_unsupported_use_dynamic_smem_, \
                                                          __COUNTER__) = 0;                              \
    thread_local

// #pragma unroll is unknown to g++; -Wunknown-pragmas is also switched off by the sslight_emu target
// (GCC 12 ignores this pragma for that warning; newer compilers honour it).
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

namespace sslight::emu {

// Thrown by launch() for an invalid configuration, a divergent barrier, a warp operation that cannot
// complete, an out-of-bounds write found in a buffer's slack bytes, or any exception raised by kernel code.
struct EmuError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {
// What a running emulated thread sees: its indices and the current block's dynamic shared memory.
struct ThreadRegs {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dyn_smem;
    size_t dyn_smem_bytes;
};
// The running fiber's registers on this OS thread (null outside a kernel). Fibers never migrate between OS
// threads, so a thread-local pointer identifies the fiber.
extern __thread ThreadRegs* tl_regs;

enum class WarpOp : uint8_t {
    sync, shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all,
    reduce_add, reduce_min_i, reduce_max_i, reduce_min_u, reduce_max_u, reduce_and, reduce_or, reduce_xor,
    match_any, match_all, active
};
// Block barrier; kind 0 plain, 1 count, 2 and, 3 or. Returns the reduction of `pred` for kinds 1-3.
int barrier(int kind, int pred, const char* file, int line);
// Warp-synchronous exchange: blocks until every lane in `mask` arrived at the same operation.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
// __activemask(): the lanes of the warp that reach the same __activemask call (the "converged" lanes),
// resolved once no thread of the block can run any further.
unsigned active_mask(const char* file, int line);
[[noreturn]] void trap(const char* what, const char* file, int line);

template <class T>
inline uint64_t to_bits(const T& v) {
    static_assert(sizeof(T) <= 8, "warp exchange of a type over 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, static_cast<const void*>(&v), sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(static_cast<void*>(&v), &b, sizeof(T));
    return v;
}
}  // namespace detail

// Dynamic shared memory of the current block (`smem` bytes of the launch, 16-byte aligned, guarded behind
// its end). Kernels spell it through kernels/common.cuh's dynamic_smem<T>() so nvcc and emu agree.
template <class T = unsigned char>
inline T* dynamic_smem() {
    return reinterpret_cast<T*>(detail::tl_regs->dyn_smem);
}

}  // namespace sslight::emu

// ---- Built-in variables, read from the running fiber.
#define threadIdx (static_cast<const uint3&>(::sslight::emu::detail::tl_regs->thread_idx))
#define blockIdx (static_cast<const uint3&>(::sslight::emu::detail::tl_regs->block_idx))
#define blockDim (static_cast<const dim3&>(::sslight::emu::detail::tl_regs->block_dim))
#define gridDim (static_cast<const dim3&>(::sslight::emu::detail::tl_regs->grid_dim))
#ifndef warpSize
constexpr int warpSize = 32;
#endif

// ---- Barriers and warp-synchronous operations. The defaulted file/line arguments name the call site in
// divergence reports; kernels call these exactly as in CUDA.
#define SSLIGHT_EMU_SITE const char *file_ = __builtin_FILE(), int line_ = __builtin_LINE()
inline void __syncthreads(SSLIGHT_EMU_SITE) { ::sslight::emu::detail::barrier(0, 0, file_, line_); }
inline int __syncthreads_count(int pred, SSLIGHT_EMU_SITE) {
    return ::sslight::emu::detail::barrier(1, pred != 0, file_, line_);
}
inline int __syncthreads_and(int pred, SSLIGHT_EMU_SITE) {
    return ::sslight::emu::detail::barrier(2, pred != 0, file_, line_);
}
inline int __syncthreads_or(int pred, SSLIGHT_EMU_SITE) {
    return ::sslight::emu::detail::barrier(3, pred != 0, file_, line_);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, SSLIGHT_EMU_SITE) {
    ::sslight::emu::detail::warp_op(::sslight::emu::detail::WarpOp::sync, mask, 0, 0, 32, file_, line_);
}
inline unsigned __activemask(SSLIGHT_EMU_SITE) { return ::sslight::emu::detail::active_mask(file_, line_); }

#define SSLIGHT_EMU_SHFL(fn, op, argtype)                                                                    \
    template <class T>                                                                                       \
    inline T fn(unsigned mask, T var, argtype arg, int width = warpSize, SSLIGHT_EMU_SITE) {                 \
        using namespace ::sslight::emu::detail;                                                              \
        return from_bits<T>(warp_op(WarpOp::op, mask, to_bits(var), static_cast<int>(arg), width, file_, line_)); \
    }
SSLIGHT_EMU_SHFL(__shfl_sync, shfl_idx, int)
SSLIGHT_EMU_SHFL(__shfl_up_sync, shfl_up, unsigned)
SSLIGHT_EMU_SHFL(__shfl_down_sync, shfl_down, unsigned)
SSLIGHT_EMU_SHFL(__shfl_xor_sync, shfl_xor, int)
#undef SSLIGHT_EMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int pred, SSLIGHT_EMU_SITE) {
    using namespace ::sslight::emu::detail;
    return static_cast<unsigned>(warp_op(WarpOp::ballot, mask, pred != 0, 0, 32, file_, line_));
}
inline int __any_sync(unsigned mask, int pred, SSLIGHT_EMU_SITE) {
    using namespace ::sslight::emu::detail;
    return static_cast<int>(warp_op(WarpOp::any, mask, pred != 0, 0, 32, file_, line_));
}
inline int __all_sync(unsigned mask, int pred, SSLIGHT_EMU_SITE) {
    using namespace ::sslight::emu::detail;
    return static_cast<int>(warp_op(WarpOp::all, mask, pred != 0, 0, 32, file_, line_));
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, SSLIGHT_EMU_SITE) {
    using namespace ::sslight::emu::detail;
    return static_cast<unsigned>(warp_op(WarpOp::match_any, mask, to_bits(value), 0, 32, file_, line_));
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred, SSLIGHT_EMU_SITE) {
    using namespace ::sslight::emu::detail;
    uint64_t r = warp_op(WarpOp::match_all, mask, to_bits(value), 0, 32, file_, line_);
    *pred = static_cast<int>(r >> 32);
    return static_cast<unsigned>(r);
}
#define SSLIGHT_EMU_REDUCE(fn, T, op)                                                                  \
    inline T fn(unsigned mask, T value, SSLIGHT_EMU_SITE) {                                            \
        using namespace ::sslight::emu::detail;                                                        \
        return static_cast<T>(warp_op(WarpOp::op, mask, static_cast<uint32_t>(value), 0, 32, file_, line_)); \
    }
SSLIGHT_EMU_REDUCE(__reduce_add_sync, unsigned, reduce_add)
SSLIGHT_EMU_REDUCE(__reduce_add_sync, int, reduce_add)
SSLIGHT_EMU_REDUCE(__reduce_min_sync, unsigned, reduce_min_u)
SSLIGHT_EMU_REDUCE(__reduce_min_sync, int, reduce_min_i)
SSLIGHT_EMU_REDUCE(__reduce_max_sync, unsigned, reduce_max_u)
SSLIGHT_EMU_REDUCE(__reduce_max_sync, int, reduce_max_i)
SSLIGHT_EMU_REDUCE(__reduce_and_sync, unsigned, reduce_and)
SSLIGHT_EMU_REDUCE(__reduce_or_sync, unsigned, reduce_or)
SSLIGHT_EMU_REDUCE(__reduce_xor_sync, unsigned, reduce_xor)
#undef SSLIGHT_EMU_REDUCE

inline void __trap(SSLIGHT_EMU_SITE) { ::sslight::emu::detail::trap("__trap()", file_, line_); }
inline void __brkpt(SSLIGHT_EMU_SITE) { ::sslight::emu::detail::trap("__brkpt()", file_, line_); }
#undef SSLIGHT_EMU_SITE

#include "emu/emu_device.h"  // math, bit and conversion intrinsics, atomics, cache-hinted loads

namespace sslight::emu {

// ---- Guarded "device memory" for tests: page-aligned mapping with PROT_NONE guard pages before and after.
// Guard::back places the data so that it ends at the rear guard (overflow faults at once); Guard::front
// places it right after the front guard (underflow faults at once). The slack bytes between the data and
// the other guard (alignment, page rounding) hold a canary that is checked after every launch. New memory
// is filled with 0xff bytes (NaN as f32/bf16, -1 as integers), as uninitialised device memory would be.
enum class Guard : uint8_t { back, front };
void* alloc(size_t bytes, const char* label = "buffer", Guard guard = Guard::back, size_t align = 16);
void free(void* p) noexcept;

template <class T>
class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(size_t n, const char* label = "buffer", Guard guard = Guard::back, size_t align = 16)
        : data_(static_cast<T*>(alloc(n * sizeof(T), label, guard, align < alignof(T) ? alignof(T) : align))),
          n_(n) {}
    explicit Buffer(const std::vector<T>& host, const char* label = "buffer", Guard guard = Guard::back)
        : Buffer(host.size(), label, guard) {
        if (!host.empty()) std::memcpy(static_cast<void*>(data_), host.data(), host.size() * sizeof(T));
    }
    Buffer(Buffer&& o) noexcept : data_(o.data_), n_(o.n_) { o.data_ = nullptr, o.n_ = 0; }
    Buffer& operator=(Buffer&& o) noexcept {
        std::swap(data_, o.data_), std::swap(n_, o.n_);
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { ::sslight::emu::free(data_); }

    T* data() const { return data_; }
    size_t size() const { return n_; }
    size_t bytes() const { return n_ * sizeof(T); }
    T& operator[](size_t i) const { return data_[i]; }
    T* begin() const { return data_; }
    T* end() const { return data_ + n_; }
    void fill(const T& v) const {
        for (size_t i = 0; i < n_; ++i) data_[i] = v;
    }
    std::vector<T> to_vector() const { return std::vector<T>(data_, data_ + n_); }

   private:
    T* data_ = nullptr;
    size_t n_ = 0;
};

// ---- Configuration. Environment: SSLIGHT_EMU_SEED (base seed, default 0), SSLIGHT_EMU_THREADS (OS threads
// running blocks, default 1), SSLIGHT_EMU_STACK_KB (fiber stack, default 64, 256 under ASan).
// Launch k of the process (k = 0, 1, ... counted since start or since set_seed) is scheduled with seed
// mix(base, k): the block order and the thread order inside each block follow from it.
void set_seed(uint64_t base_seed);  // also restarts the launch counter
uint64_t base_seed();
void set_threads(int n);  // 0: back to SSLIGHT_EMU_THREADS
int threads();
// What the SIGSEGV handler does after printing an out-of-bounds report: abort() (default) or _exit(86).
enum class FaultAction : uint8_t { abort, exit86 };
void set_fault_action(FaultAction a);

struct Stats {
    uint64_t launches, blocks, threads, switches, barriers, warp_ops;
};
Stats stats();

// ---- Kernels that cannot be emulated (tensor-core mma/wgmma, cp.async/TMA, inline PTX): their .cu files are
// not compiled for emulation and their emu tests are skipped. Add a name here together with its kernel.
inline constexpr std::array<const char*, 0> gpu_only_kernels{};
bool is_gpu_only(std::string_view kernel_name);
void print_gpu_only_kernels(std::FILE* out = stdout);

namespace detail {
using Thunk = void (*)(const void* closure);
struct LaunchSpec {
    const char* name;
    const void* kernel;
    dim3 grid, block;
    size_t smem;
    Thunk thunk;
    const void* closure;
};
void run_launch(const LaunchSpec& spec);
}  // namespace detail

// Runs `kernel` on (grid, block) with `smem` bytes of dynamic shared memory, synchronously, on the CPU.
// Arguments are converted to the kernel's parameter types and copied once, as by <<<>>>; every thread
// receives its own copy. Throws EmuError (see above); an out-of-bounds fault aborts with a report.
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "emu::launch: wrong number of kernel arguments");
    using Params = std::tuple<std::decay_t<KArgs>...>;
    struct Closure {
        void (*kernel)(KArgs...);
        Params params;
    };
    const Closure closure{kernel, Params(static_cast<std::decay_t<KArgs>>(std::forward<Args>(args))...)};
    detail::LaunchSpec spec{name, nullptr, grid, block, smem, nullptr, &closure};
    std::memcpy(&spec.kernel, &kernel, sizeof(spec.kernel));
    spec.thunk = [](const void* c) {
        const Closure& cl = *static_cast<const Closure*>(c);
        std::apply(cl.kernel, cl.params);
    };
    detail::run_launch(spec);
}

}  // namespace sslight::emu
