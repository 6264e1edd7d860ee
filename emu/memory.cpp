// Guarded memory for the CPU SIMT emulator and its out-of-bounds report. Every allocation is a private
// mapping: PROT_NONE guard page, usable pages, PROT_NONE guard page, with the data touching one guard and
// canary bytes in the slack towards the other. A SIGSEGV handler (on an alternate signal stack, since fiber
// stacks are small) turns a fault in a guard page into a report naming the buffer, the byte offset and the
// kernel, block and thread, then aborts; faults it does not own go to the previous handler.
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "emu/runtime.h"

namespace sslight::emu {
namespace detail {
namespace {

constexpr int kSlots = 8192;
constexpr unsigned char kCanary = 0xcb;
constexpr size_t kCanaryCheck = 64;  // slack bytes checked on each side of the data after every launch

struct Slot {
    std::atomic<uintptr_t> data{0};  // 0: free
    uintptr_t lo = 0;                // first usable byte (after the front guard)
    size_t usable = 0, bytes = 0;
    char label[64] = {};
};
Slot g_slots[kSlots];
std::atomic<int> g_high{0};  // slots [0, g_high) may be in use
std::mutex g_mutex;
std::atomic<int> g_action{0};
struct sigaction g_old_segv;

size_t page_size() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

// Formats the fault report for address a into buf; returns its length, 0 when the address is not a guard.
int describe(uintptr_t a, const char* access, char* buf, size_t cap) {
    const size_t page = page_size();
    const Launch* l = tl_worker ? tl_worker->launch : nullptr;
    const Fiber* f = l ? tl_fiber : nullptr;
    char where[320];
    if (l && f) {
        const uint3 b = f->regs.block_idx, t = f->regs.thread_idx;
        std::snprintf(where, sizeof where, "in kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", l->spec->name, b.x,
                      b.y, b.z, t.x, t.y, t.z);
    } else {
        std::snprintf(where, sizeof where, "in host code (no emulated kernel is running)");
    }
    const int high = g_high.load();
    for (int i = 0; i < high; ++i) {
        const uintptr_t data = g_slots[i].data.load();
        if (!data) continue;
        const Slot& s = g_slots[i];
        const long long off = static_cast<long long>(a) - static_cast<long long>(data);
        if (a >= s.lo + s.usable && a < s.lo + s.usable + page) {
            return std::snprintf(buf, cap,
                                 "emu: out-of-bounds %s at byte offset %lld (+%llu bytes past the end) of buffer '%s' "
                                 "(size %zu bytes) %s\n",
                                 access, off, static_cast<unsigned long long>(a - (data + s.bytes)), s.label, s.bytes,
                                 where);
        }
        if (a >= s.lo - page && a < s.lo) {
            return std::snprintf(buf, cap,
                                 "emu: out-of-bounds %s at byte offset %lld (%lld bytes before the start) of buffer "
                                 "'%s' (size %zu bytes) %s\n",
                                 access, off, -off, s.label, s.bytes, where);
        }
    }
    if (const Worker* w = tl_worker) {
        for (const auto& fb : w->fibers) {
            const uintptr_t m = reinterpret_cast<uintptr_t>(fb->stack.map);
            if (a >= m && a < reinterpret_cast<uintptr_t>(fb->stack.lo)) {
                return std::snprintf(buf, cap,
                                     "emu: stack overflow of an emulated thread (fiber stack %zu KiB) %s; raise "
                                     "SSLIGHT_EMU_STACK_KB\n",
                                     fb->stack.size / 1024, where);
            }
        }
    }
    if (l && f) {
        return std::snprintf(buf, cap, "emu: invalid memory %s at address %p %s\n", access,
                             reinterpret_cast<void*>(a), where);
    }
    return 0;
}

void on_fault(int sig, siginfo_t* si, void* uctx) {
    const char* access = "access";
#if defined(__x86_64__) && defined(REG_ERR)
    access = (static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? "write" : "read";
#endif
    const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
    char msg[1024];
    const int n = describe(a, access, msg, sizeof msg);
    if (n > 0) {
        ssize_t ignored = write(STDERR_FILENO, msg, static_cast<size_t>(n) < sizeof msg ? n : sizeof msg - 1);
        (void)ignored;
        const bool guard = std::strncmp(msg, "emu: invalid", 12) != 0;
        if (guard || !(g_old_segv.sa_flags & SA_SIGINFO)) {
            if (g_action.load() == static_cast<int>(FaultAction::exit86)) _exit(86);
            signal(SIGABRT, SIG_DFL);
            abort();
        }
    }
    // Not a guard page: hand over to the previous handler (e.g. AddressSanitizer's), or to the default.
    if (g_old_segv.sa_flags & SA_SIGINFO) {
        g_old_segv.sa_sigaction(sig, si, uctx);
    } else if (g_old_segv.sa_handler != SIG_DFL && g_old_segv.sa_handler != SIG_IGN) {
        g_old_segv.sa_handler(sig);
    } else {
        sigaction(SIGSEGV, &g_old_segv, nullptr);  // the faulting instruction re-executes and kills us
    }
}

void fill_slack(const Slot& s, uintptr_t data) {
    std::memset(reinterpret_cast<void*>(s.lo), kCanary, data - s.lo);
    std::memset(reinterpret_cast<void*>(data + s.bytes), kCanary, s.lo + s.usable - data - s.bytes);
}

// Report of the first canary byte changed next to slot s ("" if intact); restores the canary.
std::string check_slot(const Slot& s, uintptr_t data, const char* kernel) {
    const auto* p = reinterpret_cast<const unsigned char*>(data);
    const size_t after = std::min(kCanaryCheck, s.lo + s.usable - data - s.bytes);
    const size_t before = std::min(kCanaryCheck, data - s.lo);
    static const std::vector<unsigned char> canary(kCanaryCheck, kCanary);
    if (std::memcmp(p + s.bytes, canary.data(), after) == 0 && std::memcmp(p - before, canary.data(), before) == 0)
        return "";
    long long bad = 0;
    bool found = false;
    for (size_t i = 0; i < after && !found; ++i) {
        if (p[s.bytes + i] != kCanary) bad = static_cast<long long>(s.bytes + i), found = true;
    }
    for (size_t i = before; i >= 1 && !found; --i) {  // lowest corrupted address: where the write began
        if (p[-static_cast<long long>(i)] != kCanary) bad = -static_cast<long long>(i), found = true;
    }
    if (!found) return "";
    fill_slack(s, data);
    const std::string ctx = kernel ? std::string("during or before kernel ") + kernel : std::string("before it was freed");
    if (bad >= 0) {
        return "emu: out-of-bounds write at byte offset " + std::to_string(bad) + " (+" +
               std::to_string(bad - static_cast<long long>(s.bytes)) + " bytes past the end) of buffer '" + s.label +
               "' (size " + std::to_string(s.bytes) + " bytes), found in its slack bytes " + ctx;
    }
    return "emu: out-of-bounds write at byte offset " + std::to_string(bad) + " (" + std::to_string(-bad) +
           " bytes before the start) of buffer '" + s.label + "' (size " + std::to_string(s.bytes) +
           " bytes), found in its slack bytes " + ctx;
}

}  // namespace

void install_fault_handler() {
    // Checked at every launch and allocation: test frameworks (doctest, gtest) install their own SIGSEGV
    // handler around each test case and restore theirs afterwards. Ours then chains to theirs.
    struct sigaction cur;
    if (sigaction(SIGSEGV, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == &on_fault) return;
    static std::mutex m;
    std::lock_guard<std::mutex> lk(m);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = &on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &cur);
    if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == &on_fault)) g_old_segv = cur;
}

void install_altstack() {
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;  // one exists (e.g. ASan's)
    const size_t bytes = 64 * 1024;
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return;
    stack_t ss;
    ss.ss_sp = m, ss.ss_size = bytes, ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);  // kept for the thread's lifetime
}

void* alloc_registered(size_t bytes, const char* label, Guard guard, size_t align, bool poison) {
    const size_t page = page_size();
    if (align == 0 || (align & (align - 1)) != 0 || align > page)
        throw EmuError("emu::alloc: alignment " + std::to_string(align) + " is not a power of 2 up to a page");
    const size_t usable = ((bytes ? bytes : 1) + page - 1) / page * page;
    void* m = mmap(nullptr, usable + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw EmuError("emu::alloc: cannot map " + std::to_string(bytes) + " bytes");
    auto* base = static_cast<char*>(m);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + usable, page, PROT_NONE);
    const uintptr_t lo = reinterpret_cast<uintptr_t>(base + page);
    const uintptr_t data = guard == Guard::front ? lo : (lo + usable - bytes) & ~(uintptr_t(align) - 1);
    if (poison) std::memset(reinterpret_cast<void*>(data), 0xff, bytes);
    std::lock_guard<std::mutex> lk(g_mutex);
    for (int i = 0; i < kSlots; ++i) {
        Slot& s = g_slots[i];
        if (s.data.load() != 0) continue;
        s.lo = lo, s.usable = usable, s.bytes = bytes;
        std::snprintf(s.label, sizeof s.label, "%s", label ? label : "buffer");
        fill_slack(s, data);
        s.data.store(data);
        if (i >= g_high.load()) g_high.store(i + 1);
        return reinterpret_cast<void*>(data);
    }
    munmap(m, usable + 2 * page);
    throw EmuError("emu::alloc: more than " + std::to_string(kSlots) + " live buffers");
}

std::string check_canaries(const char* kernel) {
    std::lock_guard<std::mutex> lk(g_mutex);
    const int high = g_high.load();
    for (int i = 0; i < high; ++i) {
        const uintptr_t data = g_slots[i].data.load();
        if (!data) continue;
        std::string r = check_slot(g_slots[i], data, kernel);
        if (!r.empty()) return r;
    }
    return "";
}

}  // namespace detail

void* alloc(size_t bytes, const char* label, Guard guard, size_t align) {
    detail::install_fault_handler();
    return detail::alloc_registered(bytes, label, guard, align, true);
}

void free(void* p) noexcept {
    if (!p) return;
    using namespace detail;
    const uintptr_t data = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lk(g_mutex);
    const int high = g_high.load();
    for (int i = 0; i < high; ++i) {
        Slot& s = g_slots[i];
        if (s.data.load() != data) continue;
        const std::string r = check_slot(s, data, nullptr);
        if (!r.empty()) std::fprintf(stderr, "%s\n", r.c_str());
        s.data.store(0);
        munmap(reinterpret_cast<void*>(s.lo - page_size()), s.usable + 2 * page_size());
        return;
    }
    std::fprintf(stderr, "emu::free: %p was not returned by emu::alloc\n", p);
}

void set_fault_action(FaultAction a) { detail::g_action = static_cast<int>(a); }

}  // namespace sslight::emu
