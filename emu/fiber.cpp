// Fibers for the CPU SIMT emulator: guarded stacks and the context switch. On x86-64 a small assembly
// switch saves the callee-saved registers and swaps stack pointers (no syscall, unlike swapcontext, which
// also saves the signal mask); elsewhere, or with -DSSLIGHT_EMU_FORCE_UCONTEXT, ucontext is used. Switches
// are announced to AddressSanitizer so that it tracks the stack it is on.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "emu/runtime.h"

#if SSLIGHT_EMU_ASAN
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
#endif

#if !SSLIGHT_EMU_UCONTEXT
// sslight_emu_switch(save, sp): push the callee-saved registers, store rsp in *save, load sp, pop, return
// into the other context. sslight_emu_fiber_start: first return target of a new fiber; calls entry(arg)
// (r13, r12 of the initial frame) with a 16-byte aligned stack; entry never returns.
asm(R"(
    .text
    .p2align 4
    .globl sslight_emu_switch
    .hidden sslight_emu_switch
    .type sslight_emu_switch, @function
sslight_emu_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size sslight_emu_switch, .-sslight_emu_switch

    .p2align 4
    .globl sslight_emu_fiber_start
    .hidden sslight_emu_fiber_start
    .type sslight_emu_fiber_start, @function
sslight_emu_fiber_start:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size sslight_emu_fiber_start, .-sslight_emu_fiber_start
)");
extern "C" void sslight_emu_switch(void** save_sp, void* new_sp);
extern "C" void sslight_emu_fiber_start();
#endif

namespace sslight::emu::detail {

size_t fiber_stack_bytes() {
    static const size_t bytes = [] {
        size_t kb = SSLIGHT_EMU_ASAN ? 256 : 64;
        if (const char* e = std::getenv("SSLIGHT_EMU_STACK_KB")) {
            long v = std::strtol(e, nullptr, 10);
            if (v >= 16) kb = static_cast<size_t>(v);
        }
        return kb * 1024;
    }();
    return bytes;
}

void stack_alloc(Stack& s, size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    bytes = (bytes + page - 1) / page * page;
    void* m = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw EmuError("emu: cannot map a fiber stack of " + std::to_string(bytes) + " bytes");
    mprotect(m, page, PROT_NONE);  // overflow guard, reported by the fault handler
    s.map = static_cast<char*>(m);
    s.map_size = bytes + page;
    s.lo = s.map + page;
    s.size = bytes;
}

void stack_free(Stack& s) noexcept {
    if (s.map) munmap(s.map, s.map_size);
    s = Stack{};
}

#if SSLIGHT_EMU_UCONTEXT
static void ucontext_trampoline(unsigned hi, unsigned lo) {
    auto* c = reinterpret_cast<Context*>((static_cast<uintptr_t>(hi) << 32) | lo);
    c->entry(c->arg);
    std::abort();  // entry never returns
}
#endif

void context_make(Context& c, const Stack& s, void (*entry)(void*), void* arg, unsigned color) {
    c.stack_lo = s.lo;
    c.stack_size = s.size;
#if SSLIGHT_EMU_UCONTEXT
    c.entry = entry;
    c.arg = arg;
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = s.lo;
    c.uc.uc_stack.ss_size = s.size - (color % 64) * 64;
    c.uc.uc_link = nullptr;
    const uintptr_t p = reinterpret_cast<uintptr_t>(&c);
    makecontext(&c.uc, reinterpret_cast<void (*)()>(&ucontext_trampoline), 2, static_cast<unsigned>(p >> 32),
                static_cast<unsigned>(p & 0xffffffffu));
#else
    // Initial frame popped by sslight_emu_switch: r15 r14 r13 r12 rbx rbp, then the return address. After
    // the return rsp = top - 16 (16-byte aligned), as the call in sslight_emu_fiber_start requires.
    // The top is offset by a per-fiber multiple of 64 bytes: page-aligned tops would put every fiber's saved
    // registers in the same cache set, and switching between hundreds of fibers would miss every time.
    auto top = reinterpret_cast<uintptr_t>(s.lo + s.size - (color % 64) * 64) & ~uintptr_t(15);
    auto* w = reinterpret_cast<uintptr_t*>(top);
    w[-1] = 0, w[-2] = 0;
    w[-3] = reinterpret_cast<uintptr_t>(&sslight_emu_fiber_start);
    w[-4] = 0;                                     // rbp
    w[-5] = 0;                                     // rbx
    w[-6] = reinterpret_cast<uintptr_t>(arg);      // r12
    w[-7] = reinterpret_cast<uintptr_t>(entry);    // r13
    w[-8] = 0, w[-9] = 0;                          // r14, r15
    c.sp = &w[-9];
#endif
}

void context_native(Context& c) {
    pthread_attr_t attr;
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
    }
    c.stack_lo = addr;
    c.stack_size = size;
}

void context_switch(Context& from, Context& to) {
#if SSLIGHT_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, to.stack_lo, to.stack_size);
#endif
#if SSLIGHT_EMU_UCONTEXT
    swapcontext(&from.uc, &to.uc);
#else
    sslight_emu_switch(&from.sp, to.sp);
#endif
#if SSLIGHT_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void fiber_entered() {
#if SSLIGHT_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

}  // namespace sslight::emu::detail
