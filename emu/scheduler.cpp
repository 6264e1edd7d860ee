// Block execution for the CPU SIMT emulator: a Worker runs the blocks of a launch one after another on its
// OS thread; the threads of a block are fibers that run until they reach a barrier or a warp operation.
// Barriers release when every thread of the block waits at the same one; warp operations exchange values
// when every lane of their mask has arrived. When no fiber can run and the block is not finished, the
// block is diagnosed (divergent barrier, warp operation whose lanes never arrive), its fibers are unwound
// by throwing from their wait, and the launch fails with EmuError.
#include <algorithm>
#include <cstring>
#include <string>

#include "emu/runtime.h"

namespace sslight::emu::detail {

__thread ThreadRegs* tl_regs = nullptr;
__thread Worker* tl_worker = nullptr;
__thread Fiber* tl_fiber = nullptr;

namespace {

struct FiberCancel {};  // unwinds a fiber's kernel frames when its block is abandoned

const char* op_name(WarpOp op) {
    static const char* const names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync",
                                        "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync",
                                        "__reduce_min_sync", "__reduce_max_sync", "__reduce_and_sync",
                                        "__reduce_or_sync", "__reduce_xor_sync", "__match_any_sync",
                                        "__match_all_sync", "__activemask"};
    return names[static_cast<int>(op)];
}

std::string site(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

std::string lanes(uint32_t m) {  // "0-15,17"
    std::string s;
    for (int i = 0; i < 32; ++i) {
        if (!(m >> i & 1)) continue;
        int j = i;
        while (j + 1 < 32 && (m >> (j + 1) & 1)) ++j;
        if (!s.empty()) s += ",";
        s += std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
        i = j;
    }
    return s.empty() ? "none" : s;
}

// Leaves the running fiber and continues the next runnable fiber of the block, or the scheduler when none.
void switch_away(Fiber* f) {
    Worker& w = *f->worker;
    ++w.switches;
    if (Fiber* next = w.pop()) {
        if (w.q_size) {  // the order is random: warm the stack top of the fiber after next ...
            const Fiber* after = w.queue[w.q_head];
            __builtin_prefetch(after->ctx.sp);
            __builtin_prefetch(static_cast<const char*>(after->ctx.sp) + 64);
            if (w.q_size > 1) __builtin_prefetch(&w.queue[(w.q_head + 1) & 1023u]->ctx);  // ... and the one after
        }
        context_switch(f->ctx, next->ctx);
    } else {
        context_switch(f->ctx, w.sched);
    }
    tl_fiber = f;
    tl_regs = &f->regs;
}

// Blocks the running fiber until its barrier or warp operation completes. While its block is being
// abandoned, a wait throws instead (or returns at once inside a destructor run by that unwinding).
void wait(Fiber* f) {
    const Worker& w = *f->worker;
    if (!w.cancel) switch_away(f);
    if (w.cancel && std::uncaught_exceptions() == 0) throw FiberCancel{};
}

// Body of every fiber: runs the current launch's kernel as the thread it is assigned, then parks until the
// next block (of this or a later launch) resumes it.
void fiber_main(void* arg) {
    fiber_entered();
    auto* f = static_cast<Fiber*>(arg);
    for (;;) {
        tl_fiber = f;
        tl_regs = &f->regs;
        Worker& w = *f->worker;
        if (!w.cancel) {
            try {
                w.launch->spec->thunk(w.launch->spec->closure);
            } catch (const FiberCancel&) {
            } catch (...) {
                w.launch->fail(std::current_exception());
                w.cancel = true;
                w.q_size = 0;
            }
        }
        f->state = FiberState::done;
        ++w.n_done;
        w.warps[f->warp].done |= 1u << f->lane;
        switch_away(f);
    }
}

}  // namespace

Worker::Worker() : queue(1024) {
    context_native(sched);
    install_altstack();
}

Worker::~Worker() {
    if (tl_worker == this) tl_worker = nullptr;
    for (auto& f : fibers) stack_free(f->stack);
    ::sslight::emu::free(dyn);
}

Worker& this_worker() {
    static thread_local std::unique_ptr<Worker> w;
    if (!w) {
        w = std::make_unique<Worker>();
        tl_worker = w.get();
    }
    return *w;
}

namespace {

void prepare(Worker& w, Launch& l) {
    const LaunchSpec& s = *l.spec;
    w.launch = &l;
    w.n = l.nthreads;
    while (w.fibers.size() < w.n) {
        auto f = std::make_unique<Fiber>();
        stack_alloc(f->stack, fiber_stack_bytes());
        f->worker = &w;
        context_make(f->ctx, f->stack, &fiber_main, f.get(), static_cast<unsigned>(w.fibers.size()));
        w.fibers.push_back(std::move(f));
    }
    if (w.dyn == nullptr || w.dyn_cap != s.smem) {  // placed so that its end touches the guard page
        ::sslight::emu::free(w.dyn);
        w.dyn = nullptr;
        w.dyn = static_cast<unsigned char*>(alloc_registered(s.smem, "dynamic shared memory", Guard::back, 16, true));
        w.dyn_cap = s.smem;
    }
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber& f = *w.fibers[i];
        f.index = i, f.lane = i & 31u, f.warp = i >> 5;
        f.regs.thread_idx = uint3{i % s.block.x, (i / s.block.x) % s.block.y, i / (s.block.x * s.block.y)};
        f.regs.block_dim = s.block;
        f.regs.grid_dim = s.grid;
        f.regs.dyn_smem = w.dyn;
        f.regs.dyn_smem_bytes = s.smem;
    }
    for (unsigned k = 0; k < l.nwarps; ++k) {
        const unsigned live = std::min(32u, w.n - 32 * k);
        w.warps[k].exist = live == 32 ? ~0u : (1u << live) - 1;
    }
    w.lane_perm.resize(w.n);
    if (w.poison_kernel != s.kernel) {  // the kernel's own static __shared__ variables in this thread's TLS
        w.poison.clear();
        if (unsigned char* base = l.info->smem_ranges.empty() ? nullptr : tls_block(l.info->tls_module)) {
            for (auto& r : l.info->smem_ranges) w.poison.emplace_back(base + r.first, r.second);
            w.poison_kernel = s.kernel;
        } else {
            w.poison_kernel = l.info->smem_ranges.empty() ? s.kernel : nullptr;  // retry once TLS exists
        }
    }
}

// Queues every thread of the block, warp after warp starting from a random warp, forwards or backwards.
void queue_all(Worker& w) {
    const unsigned nw = w.launch->nwarps;
    const uint64_t r = w.next_random();
    const unsigned start = static_cast<unsigned>(r % nw);
    const bool back = (r >> 40) & 1;
    for (unsigned k = 0; k < nw; ++k) {
        const unsigned wi = w.warp_perm[back ? (start + nw - k) % nw : (start + k) % nw];
        const unsigned live = std::min(32u, w.n - 32 * wi);
        for (unsigned j = 0; j < live; ++j) {
            Fiber* f = w.fibers[32 * wi + w.lane_perm[32 * wi + (back ? live - 1 - j : j)]].get();
            f->state = FiberState::runnable;
            w.push(f);
        }
    }
}

// Every thread that will reach an __activemask has: its result is the set of lanes of its warp waiting
// at the same call site.
void resolve_active(Worker& w) {
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* f = w.fibers[i].get();
        if (f->state != FiberState::at_warp_op || f->op != WarpOp::active) continue;
        uint32_t m = 0;
        for (unsigned k = 0; k < 32 && 32 * f->warp + k < w.n; ++k) {
            const Fiber* g = w.fibers[32 * f->warp + k].get();
            const bool same = g->state == FiberState::at_warp_op && g->op == WarpOp::active && g->line == f->line &&
                              (g->file == f->file || std::strcmp(g->file, f->file) == 0);
            m |= same ? 1u << k : 0u;
        }
        f->result = m;
    }
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* f = w.fibers[i].get();
        if (f->state != FiberState::at_warp_op || f->op != WarpOp::active) continue;
        f->state = FiberState::runnable;
        w.push(f);
    }
    w.n_active = 0;
}

void release_barrier(Worker& w, int kind, int count) {
    w.bar_result = kind == 1 ? count : kind == 2 ? (count == static_cast<int>(w.n)) : kind == 3 ? (count > 0) : 0;
    w.n_barrier = 0;
    w.bar_other = nullptr;
    queue_all(w);
}

std::string diagnose(Worker& w) {
    Launch& l = *w.launch;
    const Fiber *at_bar = nullptr, *at_other = nullptr, *at_warp = nullptr, *exited = nullptr;
    unsigned n_bar = 0, n_other = 0;
    for (unsigned i = 0; i < w.n; ++i) {
        const Fiber* f = w.fibers[i].get();
        if (f->state == FiberState::done) {
            if (!exited) exited = f;
        } else if (f->state == FiberState::at_warp_op) {
            if (!at_warp) at_warp = f;
        } else if (f->state == FiberState::at_barrier) {
            if (!at_bar || (f->line == at_bar->line && std::strcmp(f->file, at_bar->file) == 0)) {
                at_bar = at_bar ? at_bar : f, ++n_bar;
            } else {
                at_other = at_other ? at_other : f, ++n_other;
            }
        }
    }
    std::string msg;
    if (at_warp) {
        const Warp& wp = w.warps[at_warp->warp];
        const uint32_t missing = at_warp->mask & ~wp.pending;
        uint32_t at_b = 0;
        for (int k = 0; k < 32; ++k) {
            if (!(missing >> k & 1)) continue;
            if (w.fibers[at_warp->warp * 32 + k]->state == FiberState::at_barrier) at_b |= 1u << k;
        }
        msg = std::string("emu: ") + op_name(at_warp->op) + " at " + site(at_warp->file, at_warp->line) +
              " never completes in " + l.where(at_warp) + ": mask 0x" + [&] {
                  char b[16];
                  std::snprintf(b, sizeof b, "%08x", at_warp->mask);
                  return std::string(b);
              }() + " names lanes that never arrive (exited: lanes " + lanes(missing & wp.done) +
              "; waiting at a barrier: lanes " + lanes(at_b) + "; waiting elsewhere: lanes " +
              lanes(missing & ~wp.done & ~at_b) + ")";
    } else if (exited && at_bar) {
        msg = "emu: divergent barrier: " + std::to_string(n_bar + n_other) + " of " + std::to_string(w.n) +
              " threads wait at __syncthreads (" + site(at_bar->file, at_bar->line) + ") but " +
              std::to_string(w.n_done) + " have exited, e.g. " + l.where(exited) +
              "; every thread of a block must reach each barrier";
    } else if (at_other && at_bar) {
        msg = "emu: divergent barrier: threads of one block wait at different __syncthreads: " +
              site(at_bar->file, at_bar->line) + " (" + std::to_string(n_bar) + " threads, e.g. " +
              l.where(at_bar) + ") and " + site(at_other->file, at_other->line) + " (" +
              std::to_string(n_other) + " threads, e.g. thread (" + std::to_string(at_other->regs.thread_idx.x) +
              "," + std::to_string(at_other->regs.thread_idx.y) + "," +
              std::to_string(at_other->regs.thread_idx.z) + "))";
    } else {
        msg = "emu: internal error: block stalled in " + l.where(w.fibers[0].get());
    }
    return msg;
}

// Resumes every unfinished fiber once so that it unwinds (FiberCancel) and parks.
void cancel_block(Worker& w) {
    w.cancel = true;
    w.q_size = 0;
    for (unsigned i = 0; i < w.n; ++i) {
        Fiber* f = w.fibers[i].get();
        if (f->state != FiberState::done) context_switch(w.sched, f->ctx);
    }
    w.cancel = false;
    tl_fiber = nullptr;
    tl_regs = nullptr;
}

void run_block(Worker& w, uint64_t b) {
    Launch& l = *w.launch;
    const LaunchSpec& s = *l.spec;
    const uint3 bi{static_cast<unsigned>(b % s.grid.x), static_cast<unsigned>((b / s.grid.x) % s.grid.y),
                   static_cast<unsigned>(b / (uint64_t(s.grid.x) * s.grid.y))};
    for (auto& p : w.poison) std::memset(p.first, 0xff, p.second);
    if (s.smem) std::memset(w.dyn, 0xff, s.smem);
    w.rng = mix_seed(l.seed, b);
    w.n_done = 0, w.n_barrier = 0, w.n_active = 0, w.bar_other = nullptr, w.cancel = false, w.q_size = 0;
    for (unsigned k = 0; k < l.nwarps; ++k) w.warps[k].done = 0, w.warps[k].pending = 0;
    // A new schedule per block: warp order and the lane order inside every warp.
    for (unsigned k = 0; k < l.nwarps; ++k) w.warp_perm[k] = static_cast<uint8_t>(k);
    for (unsigned k = l.nwarps; k > 1; --k) std::swap(w.warp_perm[k - 1], w.warp_perm[w.next_random() % k]);
    for (unsigned k = 0; k < l.nwarps; ++k) {
        uint8_t* p = &w.lane_perm[32 * k];
        const unsigned live = std::min(32u, w.n - 32 * k);
        for (unsigned j = 0; j < live; ++j) p[j] = static_cast<uint8_t>(j);
        for (unsigned j = live; j > 1; --j) std::swap(p[j - 1], p[w.next_random() % j]);
    }
    for (unsigned i = 0; i < w.n; ++i) w.fibers[i]->regs.block_idx = bi;
    queue_all(w);
    for (;;) {
        if (Fiber* f = w.pop()) context_switch(w.sched, f->ctx);  // returns when no fiber can run
        tl_fiber = nullptr;
        tl_regs = nullptr;
        if (w.n_done == w.n) break;
        if (w.cancel) {  // kernel code threw
            cancel_block(w);
            break;
        }
        if (w.n_active > 0) {
            resolve_active(w);
            continue;
        }
        if (w.n_barrier == w.n && w.bar_other == nullptr) {
            release_barrier(w, w.bar_acc[0], w.bar_acc[1]);
            continue;
        }
        l.fail(diagnose(w));
        cancel_block(w);
        break;
    }
    l.blocks.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void Worker::run(Launch& l) {
    prepare(*this, l);
    for (;;) {
        if (l.failed.load(std::memory_order_relaxed)) break;
        const uint64_t k = l.next.fetch_add(1, std::memory_order_relaxed);
        if (k >= l.nblocks) break;
        run_block(*this, l.block_at(k));
    }
    l.switches += switches, l.barriers += barriers, l.warp_ops += warp_ops;
    switches = barriers = warp_ops = 0;
    launch = nullptr;
}

namespace {
[[noreturn]] void outside_kernel(const char* what, const char* file, int line) {
    throw EmuError(std::string("emu: ") + what + " at " + site(file, line) + " called outside an emulated kernel");
}
}  // namespace

int barrier(int kind, int pred, const char* file, int line) {
    Fiber* f = tl_fiber;
    if (!f) outside_kernel("__syncthreads", file, line);
    Worker& w = *f->worker;
    if (w.n_barrier == 0) {
        w.bar_file = file, w.bar_line = line, w.bar_acc[0] = kind, w.bar_acc[1] = 0;
    } else if (line != w.bar_line || (file != w.bar_file && std::strcmp(file, w.bar_file) != 0)) {
        if (!w.bar_other) w.bar_other = f;
    }
    w.bar_acc[1] += pred;
    f->state = FiberState::at_barrier;
    f->file = file, f->line = line;
    ++w.n_barrier, ++w.barriers;
    wait(f);
    return w.bar_result;
}

namespace {

// Computes every lane's result of a warp operation whose lanes `m` have all arrived.
void exchange(Worker& w, unsigned warp, uint32_t m, WarpOp op) {
    auto fib = [&](int k) { return w.fibers[warp * 32 + k].get(); };
    uint64_t acc = 0;
    bool first = true, all_equal = true;
    uint64_t v0 = 0;
    for (int k = 0; k < 32; ++k) {
        if (!(m >> k & 1)) continue;
        const uint64_t v = fib(k)->value;
        const uint32_t u = static_cast<uint32_t>(v);
        switch (op) {
            case WarpOp::ballot: case WarpOp::any: case WarpOp::all: acc |= (v & 1) << k; break;
            case WarpOp::reduce_add: acc = first ? u : static_cast<uint32_t>(acc + u); break;
            case WarpOp::reduce_min_i: acc = first || int32_t(u) < int32_t(acc) ? u : acc; break;
            case WarpOp::reduce_max_i: acc = first || int32_t(u) > int32_t(acc) ? u : acc; break;
            case WarpOp::reduce_min_u: acc = first || u < acc ? u : acc; break;
            case WarpOp::reduce_max_u: acc = first || u > acc ? u : acc; break;
            case WarpOp::reduce_and: acc = first ? u : (acc & u); break;
            case WarpOp::reduce_or: acc = first ? u : (acc | u); break;
            case WarpOp::reduce_xor: acc = first ? u : (acc ^ u); break;
            default: break;
        }
        if (first) v0 = v;
        all_equal = all_equal && v == v0;
        first = false;
    }
    for (int k = 0; k < 32; ++k) {
        if (!(m >> k & 1)) continue;
        Fiber* f = fib(k);
        const int wd = f->width, seg = k & ~(wd - 1);
        int src = -1;
        switch (op) {
            case WarpOp::shfl_idx: src = seg + (f->arg & (wd - 1)); break;
            case WarpOp::shfl_up: src = static_cast<unsigned>(f->arg) <= static_cast<unsigned>(k - seg) ? k - f->arg : -1; break;
            case WarpOp::shfl_down:
                src = static_cast<unsigned>(f->arg) < static_cast<unsigned>(seg + wd - k) ? k + f->arg : -1;
                break;
            case WarpOp::shfl_xor: src = k ^ f->arg; src = (src >= 0 && src < seg + wd) ? src : -1; break;
            case WarpOp::any: f->result = acc != 0; break;
            case WarpOp::all: f->result = acc == m; break;
            case WarpOp::match_any: {
                uint32_t r = 0;
                for (int j = 0; j < 32; ++j) r |= ((m >> j & 1) && fib(j)->value == f->value) ? 1u << j : 0u;
                f->result = r;
                break;
            }
            case WarpOp::match_all: f->result = all_equal ? (m | (1ull << 32)) : 0; break;
            case WarpOp::sync: break;
            default: f->result = acc; break;
        }
        if (op == WarpOp::shfl_idx || op == WarpOp::shfl_up || op == WarpOp::shfl_down || op == WarpOp::shfl_xor) {
            // A source lane outside the mask gives an undefined value on the device: here the caller's own.
            f->result = (src >= 0 && (m >> src & 1)) ? fib(src)->value : f->value;
        }
    }
}

}  // namespace

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Fiber* f = tl_fiber;
    if (!f) outside_kernel(op_name(op), file, line);
    Worker& w = *f->worker;
    Warp& wp = w.warps[f->warp];
    ++w.warp_ops;
    const uint32_t bit = 1u << f->lane, m = mask & wp.exist;
    if (!(m & bit)) {
        throw EmuError("emu: " + std::string(op_name(op)) + " at " + site(file, line) + " in " +
                       w.launch->where(f) + ": the calling lane " + std::to_string(f->lane) +
                       " is not in the mask (undefined on the device)");
    }
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
        throw EmuError("emu: " + std::string(op_name(op)) + " at " + site(file, line) + " in " +
                       w.launch->where(f) + ": width " + std::to_string(width) + " is not a power of 2 in 1..32");
    }
    f->op = op, f->mask = m, f->value = value, f->arg = arg, f->width = width, f->file = file, f->line = line;
    wp.pending |= bit;
    if ((wp.pending & m) != m) {
        f->state = FiberState::at_warp_op;
        wait(f);
        return f->result;
    }
    for (int k = 0; k < 32; ++k) {  // the last lane to arrive checks that all lanes agree
        const Fiber* g = w.fibers[f->warp * 32 + k].get();
        if ((m >> k & 1) && (g->mask != m || g->op != op)) {
            throw EmuError("emu: warp operations do not match in " + w.launch->where(f) + ": lane " +
                           std::to_string(f->lane) + " is in " + op_name(op) + " at " + site(file, line) +
                           " but lane " + std::to_string(k) + " is in " + op_name(g->op) + " at " +
                           site(g->file, g->line) + " (masks " + lanes(m) + " vs " + lanes(g->mask) + ")");
        }
    }
    exchange(w, f->warp, m, op);
    wp.pending &= ~m;
    // The released lanes run next (depth first): one warp may run far ahead of the others, which exposes
    // shared memory that is overwritten before a missing barrier, as well as read before one.
    for (int k = 31; k >= 0; --k) {
        if (!(m >> k & 1) || k == static_cast<int>(f->lane)) continue;
        Fiber* g = w.fibers[f->warp * 32 + k].get();
        g->state = FiberState::runnable;
        w.push_front(g);
    }
    return f->result;
}

unsigned active_mask(const char* file, int line) {
    Fiber* f = tl_fiber;
    if (!f) outside_kernel("__activemask", file, line);
    f->op = WarpOp::active, f->file = file, f->line = line;
    f->state = FiberState::at_warp_op;
    ++f->worker->n_active;
    wait(f);
    return static_cast<unsigned>(f->result);
}

void trap(const char* what, const char* file, int line) {
    throw EmuError(std::string("emu: ") + what + " at " + site(file, line) + " in " + tl_worker->launch->where(tl_fiber));
}

}  // namespace sslight::emu::detail
