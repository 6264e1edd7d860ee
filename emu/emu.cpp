// Launch entry point of the CPU SIMT emulator: validates the configuration as the CUDA runtime would,
// derives the launch's seed and its shuffled block order, runs the blocks on one or more OS threads (each
// with its own Worker and fibers), checks the buffer canaries, and turns every failure into EmuError.
// Also the configuration (seed, threads, fault action), statistics and the list of GPU-only kernels.
#include <condition_variable>
#include <cstdlib>
#include <string>
#include <thread>

#include "emu/runtime.h"

namespace sslight::emu {
namespace detail {
namespace {

uint64_t env_u64(const char* name, uint64_t def) {
    const char* e = std::getenv(name);
    return e && *e ? std::strtoull(e, nullptr, 0) : def;
}

std::atomic<uint64_t> g_base_seed{env_u64("SSLIGHT_EMU_SEED", 0)};
std::atomic<uint64_t> g_launches{0};  // launch counter since start or set_seed
std::atomic<int> g_threads{0};        // 0: from the environment
std::atomic<uint64_t> g_stats[6];     // launches, blocks, threads, switches, barriers, warp ops

constexpr size_t kMaxStaticSmem = 48 * 1024;   // without opt-in, as on the device
constexpr size_t kMaxSmem = 227 * 1024;        // opt-in maximum per block on sm_90

// Runs the blocks of pooled launches on helper threads; the launching thread works too.
class Pool {
   public:
    void run(Launch& l, unsigned helpers) {
        std::lock_guard<std::mutex> one_at_a_time(run_m_);
        while (threads_.size() < helpers) {
            const unsigned id = static_cast<unsigned>(threads_.size());
            threads_.emplace_back([this, id] { loop(id); });
        }
        {
            std::lock_guard<std::mutex> lk(m_);
            job_ = &l, want_ = helpers, active_ = helpers, ++gen_;
        }
        cv_.notify_all();
        work(l);
        std::unique_lock<std::mutex> lk(m_);
        done_cv_.wait(lk, [&] { return active_ == 0; });
    }

   private:
    static void work(Launch& l) {
        try {
            this_worker().run(l);
        } catch (...) {
            l.fail(std::current_exception());
        }
    }
    void loop(unsigned id) {
        uint64_t seen = 0;
        for (;;) {
            Launch* l = nullptr;
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_.wait(lk, [&] { return gen_ != seen; });
                seen = gen_;
                if (id >= want_) continue;
                l = job_;
            }
            work(*l);
            std::lock_guard<std::mutex> lk(m_);
            if (--active_ == 0) done_cv_.notify_all();
        }
    }
    std::mutex run_m_, m_;
    std::condition_variable cv_, done_cv_;
    std::vector<std::thread> threads_;
    Launch* job_ = nullptr;
    uint64_t gen_ = 0;
    unsigned want_ = 0, active_ = 0;
};

Pool& pool() {
    static Pool* p = new Pool;  // never destroyed: helper threads stay parked until the process exits
    return *p;
}

std::string dim_str(dim3 d) {
    return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

void validate(const LaunchSpec& s) {
    struct Prefix {  // built only when a check fails
        const LaunchSpec& s;
        std::string operator+(const char* why) const {
            return std::string("emu: launch of kernel ") + s.name + " with grid " + dim_str(s.grid) + ", block " +
                   dim_str(s.block) + ", " + std::to_string(s.smem) + " bytes of dynamic shared memory: " + why;
        }
    } k{s};
    if (tl_regs) throw EmuError(k + "launching from kernel code (dynamic parallelism) is not supported");
    if (is_gpu_only(s.name)) throw EmuError(k + "the kernel is GPU-only (see emu::gpu_only_kernels)");
    const uint64_t threads = uint64_t(s.block.x) * s.block.y * s.block.z;
    if (threads == 0 || uint64_t(s.grid.x) * s.grid.y * s.grid.z == 0) throw EmuError(k + "a dimension is zero");
    if (s.block.x > 1024 || s.block.y > 1024 || s.block.z > 64 || threads > 1024)
        throw EmuError(k + "invalid block (at most 1024 threads, 1024 x 1024 x 64)");
    if (s.grid.x > 0x7fffffffu || s.grid.y > 65535 || s.grid.z > 65535)
        throw EmuError(k + "invalid grid (at most 2^31-1 x 65535 x 65535)");
    if (s.smem > kMaxSmem) throw EmuError(k + "more than 227 KiB of dynamic shared memory");
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b) {
    uint64_t z = a * 0x9e3779b97f4a7c15ull + b + 0x632be59bd9b4e019ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t Launch::block_at(uint64_t k) const {
    if (!perm.empty()) return perm[k];
    return static_cast<uint64_t>((static_cast<unsigned __int128>(affine_a) * k + affine_b) % nblocks);
}

void Launch::fail(const std::string& msg) {
    std::lock_guard<std::mutex> lk(m);
    if (error.empty() && !exc) error = msg;
    failed = true;
}

void Launch::fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(m);
    if (error.empty() && !exc) exc = e;
    failed = true;
}

std::string Launch::where(const Fiber* f) const {
    const uint3 b = f->regs.block_idx, t = f->regs.thread_idx;
    return std::string("kernel ") + spec->name + ", block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
           std::to_string(b.z) + "), thread (" + std::to_string(t.x) + "," + std::to_string(t.y) + "," +
           std::to_string(t.z) + ")";
}

void run_launch(const LaunchSpec& s) {
    validate(s);
    install_fault_handler();
    Launch l;
    l.spec = &s;
    l.info = &kernel_info(s.kernel);
    if (l.info->static_smem > kMaxStaticSmem || l.info->static_smem + s.smem > kMaxSmem) {
        throw EmuError(std::string("emu: kernel ") + s.name + " uses " + std::to_string(l.info->static_smem) +
                       " bytes of static and " + std::to_string(s.smem) +
                       " bytes of dynamic shared memory (limits 48 KiB static, 227 KiB in all)");
    }
    l.base_seed = g_base_seed.load();
    l.index = g_launches.fetch_add(1);
    l.seed = mix_seed(l.base_seed, l.index);
    l.nthreads = s.block.x * s.block.y * s.block.z;
    l.nwarps = (l.nthreads + 31) / 32;
    l.nblocks = uint64_t(s.grid.x) * s.grid.y * s.grid.z;
    uint64_t r = l.seed;
    auto rnd = [&r] { return r = mix_seed(r, 0x5bd1e995u); };
    if (l.nblocks <= (1u << 22)) {  // Fisher-Yates; beyond 4M blocks a random affine bijection
        l.perm.resize(l.nblocks);
        for (uint64_t i = 0; i < l.nblocks; ++i) l.perm[i] = static_cast<uint32_t>(i);
        for (uint64_t i = l.nblocks; i > 1; --i) std::swap(l.perm[i - 1], l.perm[rnd() % i]);
    } else {
        auto gcd = [](uint64_t a, uint64_t b) { while (b) a %= b, std::swap(a, b); return a; };
        do l.affine_a = rnd() % l.nblocks | 1; while (gcd(l.affine_a, l.nblocks) != 1);
        l.affine_b = rnd() % l.nblocks;
    }
    const unsigned nthreads = static_cast<unsigned>(std::min<uint64_t>(threads(), l.nblocks));
    if (nthreads <= 1) {
        this_worker().run(l);
    } else {
        pool().run(l, nthreads - 1);
    }
    const uint64_t counts[6] = {1, l.blocks, l.nblocks * l.nthreads, l.switches, l.barriers, l.warp_ops};
    for (int i = 0; i < 6; ++i) g_stats[i] += counts[i];
    const std::string canary = check_canaries(s.name);
    if (!canary.empty()) l.fail(canary);
    if (l.exc) std::rethrow_exception(l.exc);
    if (!l.error.empty()) {
        throw EmuError(l.error + " [emu launch #" + std::to_string(l.index) + ", SSLIGHT_EMU_SEED=" +
                       std::to_string(l.base_seed) + "]");
    }
}

}  // namespace detail

void set_seed(uint64_t seed) {
    detail::g_base_seed = seed;
    detail::g_launches = 0;
}

uint64_t base_seed() { return detail::g_base_seed.load(); }

void set_threads(int n) { detail::g_threads = n < 0 ? 0 : n; }

int threads() {
    static const int env = [] {
        const long v = static_cast<long>(detail::env_u64("SSLIGHT_EMU_THREADS", 1));
        return static_cast<int>(v < 1 ? 1 : v > 256 ? 256 : v);
    }();
    const int n = detail::g_threads.load();
    return n > 0 ? n : env;
}

Stats stats() {
    using detail::g_stats;
    return Stats{g_stats[0], g_stats[1], g_stats[2], g_stats[3], g_stats[4], g_stats[5]};
}

bool is_gpu_only(std::string_view kernel_name) {
    for (const char* k : gpu_only_kernels) {
        if (kernel_name == k) return true;
    }
    return false;
}

void print_gpu_only_kernels(std::FILE* out) {
    std::fprintf(out, "emu: GPU-only kernels (tensor cores, cp.async/TMA or inline PTX; not emulated):");
    if (gpu_only_kernels.empty()) std::fprintf(out, " none");
    for (const char* k : gpu_only_kernels) std::fprintf(out, " %s", k);
    std::fprintf(out, "\n");
}

}  // namespace sslight::emu
