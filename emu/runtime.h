// Internal state of the CPU SIMT emulator, shared by the emu/*.cpp files (kernels never see it): fibers
// and their contexts, the per-OS-thread Worker that runs blocks, and the per-launch state shared by the
// workers of one launch.
#pragma once

#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "emu/emu.h"

#if !defined(__x86_64__) || defined(SSLIGHT_EMU_FORCE_UCONTEXT)
#define SSLIGHT_EMU_UCONTEXT 1
#include <ucontext.h>
#else
#define SSLIGHT_EMU_UCONTEXT 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SSLIGHT_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SSLIGHT_EMU_ASAN 1
#endif
#endif
#ifndef SSLIGHT_EMU_ASAN
#define SSLIGHT_EMU_ASAN 0
#endif

namespace sslight::emu::detail {

// ---- Fibers (fiber.cpp). A stack is [lo, lo + size) with a PROT_NONE guard page below lo.
struct Stack {
    char* map = nullptr;
    size_t map_size = 0;
    char* lo = nullptr;
    size_t size = 0;
};
struct Context {
    void* sp = nullptr;  // saved stack pointer (assembly switch)
#if SSLIGHT_EMU_UCONTEXT
    ucontext_t uc;
    void (*entry)(void*) = nullptr;
    void* arg = nullptr;
#endif
    const void* stack_lo = nullptr;  // bounds of the stack this context runs on (for ASan)
    size_t stack_size = 0;
};
size_t fiber_stack_bytes();
void stack_alloc(Stack& s, size_t bytes);  // throws EmuError when out of memory
void stack_free(Stack& s) noexcept;
void context_make(Context& c, const Stack& s, void (*entry)(void*), void* arg, unsigned color);
void context_native(Context& c);  // the calling OS thread's own stack
void context_switch(Context& from, Context& to);
void fiber_entered();  // first thing a new fiber runs (completes the ASan switch)

// ---- Per-kernel facts from the ELF symbol table (symbols.cpp).
struct KernelInfo {
    std::string symbol;        // mangled name, empty when not found
    size_t static_smem = 0;    // bytes of the kernel's own __shared__ variables
    std::vector<std::pair<size_t, size_t>> smem_ranges;  // (offset in the module's TLS block, bytes)
    size_t tls_module = 0;     // dl_iterate_phdr's dlpi_tls_modid of the kernel's module
};
const KernelInfo& kernel_info(const void* kernel);
// Address of the calling thread's TLS block of module `modid` (null if not allocated yet).
unsigned char* tls_block(size_t modid);

// ---- Guarded memory (memory.cpp).
void install_fault_handler();
void install_altstack();  // per OS thread that runs fibers
// Checks the canary bytes next to every live buffer; returns a report of the first violation or "".
std::string check_canaries(const char* kernel);
void* alloc_registered(size_t bytes, const char* label, Guard guard, size_t align, bool poison);

// ---- Execution.
enum class FiberState : uint8_t { runnable, at_barrier, at_warp_op, done };
struct Worker;

struct Fiber {
    ThreadRegs regs{};
    Context ctx;
    Stack stack;
    Worker* worker = nullptr;
    unsigned index = 0, lane = 0, warp = 0;
    FiberState state = FiberState::done;
    // The operation the fiber waits in: barrier or warp exchange (also used for reports).
    WarpOp op = WarpOp::sync;
    unsigned mask = 0;
    int arg = 0, width = 32;
    uint64_t value = 0, result = 0;
    const char* file = "";
    int line = 0;
};

struct Warp {
    uint32_t exist = 0, done = 0, pending = 0;
};

struct Launch {
    const LaunchSpec* spec = nullptr;
    const KernelInfo* info = nullptr;
    uint64_t seed = 0, index = 0, base_seed = 0;
    unsigned nthreads = 0, nwarps = 0;
    uint64_t nblocks = 0;
    std::vector<uint32_t> perm;  // block visiting order; empty for huge grids (affine order)
    uint64_t affine_a = 1, affine_b = 0;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex m;
    std::string error;
    std::exception_ptr exc;
    std::atomic<uint64_t> blocks{0}, switches{0}, barriers{0}, warp_ops{0};

    uint64_t block_at(uint64_t k) const;
    void fail(const std::string& msg);
    void fail(std::exception_ptr e);
    std::string where(const Fiber* f) const;  // "kernel NAME, block (x,y,z), thread (x,y,z)"
};

struct Worker {
    std::vector<std::unique_ptr<Fiber>> fibers;
    Context sched;
    Launch* launch = nullptr;
    unsigned n = 0, n_done = 0, n_barrier = 0, n_active = 0;  // n_active: threads waiting in __activemask
    bool cancel = false;
    std::vector<Fiber*> queue;  // ring buffer of runnable fibers, capacity 1024
    unsigned q_head = 0, q_size = 0;
    // In-block schedule of the current block: warps in a random order, the lanes of each warp in a random
    // order (lane_perm[32 * w + j] is the j-th lane of warp w to start).
    uint8_t warp_perm[32] = {};
    std::vector<uint8_t> lane_perm;
    Warp warps[32];
    uint64_t rng = 0;
    // barrier being assembled
    const char* bar_file = "";
    int bar_line = 0, bar_acc[3] = {0, 0, 0}, bar_result = 0;
    const Fiber* bar_other = nullptr;  // a fiber waiting at a different barrier, if any
    // dynamic shared memory (guarded) and the static __shared__ ranges of the current kernel
    unsigned char* dyn = nullptr;
    size_t dyn_cap = 0;
    const void* poison_kernel = nullptr;
    std::vector<std::pair<unsigned char*, size_t>> poison;
    uint64_t switches = 0, barriers = 0, warp_ops = 0;

    Worker();
    ~Worker();
    void run(Launch& l);  // runs blocks of l until none is left or the launch failed

    void push(Fiber* f) {
        queue[(q_head + q_size++) & 1023u] = f;
    }
    void push_front(Fiber* f) {
        q_head = (q_head + 1023u) & 1023u, ++q_size;
        queue[q_head] = f;
    }
    Fiber* pop() {
        if (q_size == 0) return nullptr;
        Fiber* f = queue[q_head];
        q_head = (q_head + 1) & 1023u, --q_size;
        return f;
    }
    uint64_t next_random() {  // splitmix64
        uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};
extern __thread Worker* tl_worker;
extern __thread Fiber* tl_fiber;
Worker& this_worker();
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace sslight::emu::detail
