// Tests of the CPU SIMT emulator (emu/): barriers, shuffles and votes against their definitions, shared
// memory isolation, atomics under contention, 2-D/3-D indexing, bf16 and float4, the kernels/common.cuh
// integration, seeded block order, and the three catches: a missing __syncthreads gives a wrong result,
// out-of-bounds accesses are reported with kernel and offset (checked in a forked child), divergent
// barriers and incomplete warp operations throw EmuError instead of hanging.
#ifndef SSLIGHT_EMU
#define SSLIGHT_EMU
#endif
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "emu/emu.h"
#include "kernels/common.cuh"

namespace se = sslight::emu;

namespace emu_test {

__global__ void tree_sum(const float* in, float* out, int n) {
    __shared__ float s[256];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? in[i] : 0.f;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (t < o) s[t] += s[t + o];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

__global__ void reverse(const int* in, int* out, bool sync) {
    __shared__ int s[256];
    const int t = threadIdx.x;
    s[t] = in[t];
    if (sync) __syncthreads();
    out[t] = s[blockDim.x - 1 - t];
}

// block_sum of kernels/common.cuh without its leading barrier: a second call may overwrite `scratch`
// while slower warps still read the first call's partial sums (a write-after-read race).
__device__ float block_sum_no_leading_sync(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = sslight::kernels::emu::warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.f;
    return sslight::kernels::emu::warp_sum(v);
}

__global__ void two_block_sums(const float* in, float* out, bool leading_sync) {
    __shared__ float scratch[32];
    const float x = in[blockIdx.x * blockDim.x + threadIdx.x];
    const float a = leading_sync ? sslight::kernels::emu::block_sum(x, scratch) : block_sum_no_leading_sync(x, scratch);
    const float b = leading_sync ? sslight::kernels::emu::block_sum(2.f * x, scratch)
                                 : block_sum_no_leading_sync(2.f * x, scratch);
    if ((threadIdx.x & 31) == 0) out[blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = a + 10.f * b;
}

// For every lane and width: the four shuffles of a float, an int, a double and a bf16.
__global__ void shuffles(const float* in, float* out, int* iout, double* dout, float* bout, int width, int arg) {
    const int t = threadIdx.x;
    const float v = in[t];
    out[4 * t + 0] = __shfl_sync(0xffffffffu, v, arg, width);
    out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, arg, width);
    out[4 * t + 2] = __shfl_down_sync(0xffffffffu, v, arg, width);
    out[4 * t + 3] = __shfl_xor_sync(0xffffffffu, v, arg, width);
    iout[t] = __shfl_xor_sync(0xffffffffu, static_cast<int>(v) - 1000, arg, width);
    dout[t] = __shfl_down_sync(0xffffffffu, static_cast<double>(v) * 1e10, arg, width);
    bout[t] = __bfloat162float(__shfl_up_sync(0xffffffffu, __float2bfloat16(v), arg, width));
}

__global__ void votes(const int* pred, unsigned* out) {
    const int t = threadIdx.x, p = pred[t];
    out[8 * t + 0] = __ballot_sync(0xffffffffu, p);
    out[8 * t + 1] = __any_sync(0xffffffffu, p);
    out[8 * t + 2] = __all_sync(0xffffffffu, p);
    const unsigned half = (t & 16) ? 0xffff0000u : 0x0000ffffu;  // each half-warp votes on its own
    out[8 * t + 3] = __ballot_sync(half, p);
    out[8 * t + 4] = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(p + t));
    out[8 * t + 5] = __match_any_sync(0xffffffffu, p);
    __syncwarp();
    out[8 * t + 6] = static_cast<unsigned>(__syncthreads_count(p));
    out[8 * t + 7] = static_cast<unsigned>(__syncthreads_and(p) * 2 + __syncthreads_or(p));
}

__global__ void active_lanes(unsigned* out) {
    const unsigned lane = threadIdx.x & 31;
    unsigned m = 0;
    if (lane < 20) {
        m = __activemask();
        m ^= __shfl_sync(m, lane * 3u, 2);
    }
    out[threadIdx.x] = m;
}

__global__ void shared_isolation(unsigned* bad, int spins) {
    __shared__ unsigned s[128];
    unsigned* d = se::dynamic_smem<unsigned>();
    const unsigned t = threadIdx.x, tag = blockIdx.x * 1000u + t;
    if (s[t] != 0xffffffffu || d[t] != 0xffffffffu) atomicAdd(&bad[0], 1u);  // poisoned at block start
    s[t] = tag, d[t] = tag + 7;
    for (int i = 0; i < spins; ++i) __syncthreads();
    const unsigned o = blockDim.x - 1 - t, want = blockIdx.x * 1000u + o;
    if (s[o] != want || d[o] != want + 7) atomicAdd(&bad[1], 1u);
}

__global__ void atomics(int* i, unsigned* u, unsigned long long* ull, float* f, double* d, int* mx, int* mn,
                        unsigned* cas, float* fsum_shared, int* exch, int* exch_out) {
    static __shared__ float s[1];  // `static __shared__` is accepted as in CUDA
    const int id = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x == 0) s[0] = 0.f;
    __syncthreads();
    atomicAdd(i, 1), atomicAdd(u, 2u), atomicAdd(ull, 3ull), atomicAdd(f, 1.f), atomicAdd(d, 0.5);
    atomicMax(mx, (id * 7919) % 16384), atomicMin(mn, (id * 7919) % 16384 - 5);
    unsigned old = *cas, seen;
    while ((seen = atomicCAS(cas, old, old + 1)) != old) old = seen;  // CAS-loop increment
    atomicAdd(&s[0], 0.25f);
    exch_out[id] = atomicExch(exch, id);
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(fsum_shared, s[0]);
}

__global__ void intrinsics(const float* x, float* f, unsigned* u) {
    const float a = __ldg(&x[0]), b = x[1];
    f[0] = __saturatef(a), f[1] = __saturatef(-a), f[2] = __fdividef(a, b), f[3] = rsqrtf(b);
    f[4] = __expf(a) - expf(a), f[5] = __int_as_float(__float_as_int(a)), f[6] = min(a, b), f[7] = max(a, b);
    u[0] = __popc(0xf0f0u), u[1] = __brev(1u), u[2] = __byte_perm(0x33221100u, 0x77665544u, 0x7531u);
    u[3] = static_cast<unsigned>(__clz(1)), u[4] = static_cast<unsigned>(__ffs(8)), u[5] = __float_as_uint(1.f);
    u[6] = min(3u, 5u), u[7] = static_cast<unsigned>(max(-3, 2)), u[8] = __umulhi(0x80000000u, 6u);
}

__global__ void indexing(unsigned* out) {
    const unsigned b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned n = blockDim.x * blockDim.y * blockDim.z;
    out[b * n + t] = (blockIdx.x << 24) | (blockIdx.y << 16) | (blockIdx.z << 12) | (threadIdx.x << 8) |
                     (threadIdx.y << 4) | threadIdx.z;
}

__global__ void bf16_and_float4(const float* in, float* rt, float* prod, float* sums, int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    const float4 v = reinterpret_cast<const float4*>(in)[i];
    sums[i] = v.x + v.y + v.z + v.w;
    const __nv_bfloat16 b = __float2bfloat16(v.x);
    rt[i] = __bfloat162float(b);
    prod[i] = __bfloat162float(b * __float2bfloat16(v.y));
}

__global__ void record_order(int* counter, int* blocks, int* threads) {
    if (threadIdx.x == 0) blocks[atomicAdd(&counter[0], 1)] = blockIdx.x;
    if (blockIdx.x == 0) threads[atomicAdd(&counter[1], 1)] = threadIdx.x;
}

__global__ void oob(const float* in, float* out, int read_at, int write_at) {
    if (threadIdx.x == 3 && blockIdx.x == 1) {
        if (read_at != 0) out[0] = in[read_at];
        if (write_at != 0) out[write_at] = 1.f;
    }
}

__global__ void divergent_exit(float* out) {
    if (threadIdx.x >= 100) return;
    __syncthreads();
    out[threadIdx.x] = 1.f;
}

__global__ void divergent_sites(float* out) {
    if (threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 2.f;
}

__global__ void shfl_missing_lanes(float* out) {
    if (threadIdx.x % 32 >= 24) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 1);
}

__global__ void too_much_static_smem(float* out) {
    __shared__ float big[12 * 1024 + 1];  // 48 KiB + 4 bytes
    big[threadIdx.x] = 1.f;
    out[0] = big[0];
}

__global__ void throws(int* p) {
    if (threadIdx.x == 5) __trap();
    __syncthreads();
    p[threadIdx.x] = 1;
}

}  // namespace emu_test

// The kernels/common.cuh integration: a kernel in the emulated kernel namespace using block_sum.
namespace sslight::kernels::emu {
__global__ void test_emu_row_sum_kernel(const float* x, float* out, int n) {
    __shared__ float scratch[32];
    float v = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];
    const float s = block_sum(v, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}
}  // namespace sslight::kernels::emu

namespace {

struct Child {
    int status = 0;
    std::string err;
};

// Runs f in a forked child whose stderr is captured; the child never returns into doctest.
template <class F>
Child run_in_child(F f) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    std::fflush(stdout), std::fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        se::set_threads(1);
        f();
        _exit(0);
    }
    close(fds[1]);
    Child c;
    char buf[4096];
    for (ssize_t r; (r = read(fds[0], buf, sizeof buf)) > 0;) c.err.append(buf, static_cast<size_t>(r));
    close(fds[0]);
    waitpid(pid, &c.status, 0);
    return c;
}

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

double cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

}  // namespace

TEST_SUITE("emu") {

TEST_CASE("gpu-only kernel list") {
    se::print_gpu_only_kernels(stdout);
    CHECK(se::gpu_only_kernels.size() == 0);
    CHECK_FALSE(se::is_gpu_only("test_emu_row_sum_kernel"));
}

TEST_CASE("barrier: block-wide tree reduction in shared memory, 1 and 2 OS threads") {
    const int n = 256 * 37 - 101, blocks = (n + 255) / 256;
    se::Buffer<float> in(n, "in"), out(blocks, "out");
    double ref = 0;
    for (int i = 0; i < n; ++i) in[i] = static_cast<float>((i * 37) % 101) - 50.f, ref += in[i];
    for (int threads : {1, 2}) {
        se::set_threads(threads);
        se::launch("tree_sum", emu_test::tree_sum, dim3(blocks), dim3(256), 0, in.data(), out.data(), n);
        double got = 0;
        for (int b = 0; b < blocks; ++b) got += out[b];
        CHECK(got == ref);
    }
    se::set_threads(0);
}

TEST_CASE("barrier: a missing __syncthreads gives a wrong result, with it the right one") {
    se::Buffer<int> in(256, "in"), out(256, "out");
    for (int i = 0; i < 256; ++i) in[i] = i;
    for (uint64_t seed : {0, 1, 2, 3}) {
        se::set_seed(seed);
        for (bool sync : {false, true}) {
            se::launch("reverse", emu_test::reverse, dim3(1), dim3(256), 0, in.data(), out.data(), sync);
            int wrong = 0;
            for (int i = 0; i < 256; ++i) wrong += out[i] != 255 - i;
            if (sync) CHECK(wrong == 0);
            if (!sync) CHECK(wrong >= 128);
        }
    }
}

TEST_CASE("barrier: a missing barrier before shared memory is reused gives a wrong result") {
    const int blocks = 16, threads = 256, warps = threads / 32;
    se::Buffer<float> in(blocks * threads, "in"), out(blocks * warps, "out");
    for (int i = 0; i < blocks * threads; ++i) in[i] = static_cast<float>(1 + i % 5);
    for (uint64_t seed : {0, 1, 2, 3}) {
        se::set_seed(seed);
        for (bool sync : {false, true}) {
            se::launch("two_block_sums", emu_test::two_block_sums, dim3(blocks), dim3(threads), 0, in.data(),
                       out.data(), sync);
            int wrong = 0;
            for (int b = 0; b < blocks; ++b) {
                float s = 0.f;
                for (int t = 0; t < threads; ++t) s += in[b * threads + t];
                for (int w = 0; w < warps; ++w) wrong += out[b * warps + w] != s + 10.f * (2.f * s);
            }
            if (sync) CHECK(wrong == 0);
            if (!sync) CHECK(wrong >= blocks);
        }
    }
    se::set_seed(0);
}

TEST_CASE("shuffles match their definitions for widths 32, 16, 8") {
    const int n = 64;  // two warps
    se::Buffer<float> in(n, "in"), out(4 * n, "out"), bout(n, "bout");
    se::Buffer<int> iout(n, "iout");
    se::Buffer<double> dout(n, "dout");
    for (int i = 0; i < n; ++i) in[i] = static_cast<float>(1000 + 3 * i);
    for (int width : {32, 16, 8}) {
        for (int arg : {0, 1, 3, 5, 17}) {
            se::launch("shuffles", emu_test::shuffles, dim3(1), dim3(n), 0, in.data(), out.data(), iout.data(),
                       dout.data(), bout.data(), width, arg);
            for (int t = 0; t < n; ++t) {
                const int lane = t % 32, seg = lane / width * width, base = t - lane;
                const int idx = base + seg + arg % width;
                const int up = lane - arg >= seg ? t - arg : t;
                const int down = lane + arg < seg + width ? t + arg : t;
                const int x = lane ^ arg, xr = x < seg + width ? base + x : t;
                CAPTURE(width);
                CAPTURE(arg);
                CAPTURE(t);
                CHECK(out[4 * t + 0] == in[idx]);
                CHECK(out[4 * t + 1] == in[up]);
                CHECK(out[4 * t + 2] == in[down]);
                CHECK(out[4 * t + 3] == in[xr]);
                CHECK(iout[t] == static_cast<int>(in[xr]) - 1000);
                CHECK(dout[t] == static_cast<double>(in[down]) * 1e10);
                CHECK(bout[t] == static_cast<float>(sslight::bf16(in[up])));
            }
        }
    }
}

TEST_CASE("votes, warp reductions and counting barriers match their definitions") {
    const int n = 96;
    se::Buffer<int> pred(n, "pred");
    se::Buffer<unsigned> out(8 * n, "out");
    for (int i = 0; i < n; ++i) pred[i] = (i * 7 + i / 5) % 3 == 0;
    pred[64] = 1;
    for (int i = 65; i < 96; ++i) pred[i] = 1;  // third warp: all true
    se::launch("votes", emu_test::votes, dim3(1), dim3(n), 0, pred.data(), out.data());
    int count = 0;
    for (int i = 0; i < n; ++i) count += pred[i];
    for (int t = 0; t < n; ++t) {
        const int w = t / 32 * 32;
        unsigned ballot = 0, sum = 0, match = 0;
        for (int l = 0; l < 32; ++l) {
            ballot |= unsigned(pred[w + l] != 0) << l;
            sum += pred[w + l] + w + l;
            match |= unsigned(pred[w + l] == pred[t]) << l;
        }
        const unsigned half = (t & 16) ? 0xffff0000u : 0x0000ffffu;
        CAPTURE(t);
        CHECK(out[8 * t + 0] == ballot);
        CHECK(out[8 * t + 1] == (ballot != 0));
        CHECK(out[8 * t + 2] == (ballot == 0xffffffffu));
        CHECK(out[8 * t + 3] == (ballot & half));
        CHECK(out[8 * t + 4] == sum);
        CHECK(out[8 * t + 5] == match);
        CHECK(out[8 * t + 6] == static_cast<unsigned>(count));
        CHECK(out[8 * t + 7] == (count == n ? 2u : 0u) + (count > 0 ? 1u : 0u));
    }
}

TEST_CASE("__activemask is the set of lanes that reach it together") {
    se::Buffer<unsigned> out(48, "out");
    se::launch("active_lanes", emu_test::active_lanes, dim3(2), dim3(48), 0, out.data());
    for (unsigned t = 0; t < 48; ++t) {
        const unsigned lane = t % 32, active = t < 32 ? 0xfffffu : 0xffffu;
        CHECK(out[t] == (lane < 20 ? active ^ 6u : 0u));
    }
}

TEST_CASE("shared memory (static and dynamic) is private to a block and poisoned at its start") {
    se::Buffer<unsigned> bad(2, "bad");
    for (int threads : {1, 2}) {
        se::set_threads(threads);
        bad.fill(0);
        se::launch("shared_isolation", emu_test::shared_isolation, dim3(64), dim3(128), 128 * sizeof(unsigned),
                   bad.data(), 20);
        CHECK(bad[0] == 0);
        CHECK(bad[1] == 0);
    }
    se::set_threads(0);
}

TEST_CASE("atomics are exact under contention on global and shared memory") {
    const int blocks = 64, threads = 256, total = blocks * threads;
    se::Buffer<int> i(1, "i"), mx(1, "mx"), mn(1, "mn"), exch(1, "exch"), exch_out(total, "exch_out");
    se::Buffer<unsigned> u(1, "u"), cas(1, "cas");
    se::Buffer<unsigned long long> ull(1, "ull");
    se::Buffer<float> f(1, "f"), fs(1, "fs");
    se::Buffer<double> d(1, "d");
    for (int os_threads : {1, 2}) {
        se::set_threads(os_threads);
        i[0] = 0, u[0] = 0, ull[0] = 0, f[0] = 0, d[0] = 0, mx[0] = -1, mn[0] = 1 << 30, cas[0] = 0, fs[0] = 0;
        exch[0] = -1;
        se::launch("atomics", emu_test::atomics, dim3(blocks), dim3(threads), 0, i.data(), u.data(), ull.data(),
                   f.data(), d.data(), mx.data(), mn.data(), cas.data(), fs.data(), exch.data(), exch_out.data());
        CHECK(i[0] == total);
        CHECK(u[0] == 2u * total);
        CHECK(ull[0] == 3ull * total);
        CHECK(f[0] == static_cast<float>(total));
        CHECK(d[0] == 0.5 * total);
        CHECK(mx[0] == 16383);
        CHECK(mn[0] == -5);
        CHECK(cas[0] == static_cast<unsigned>(total));
        CHECK(fs[0] == 0.25f * total);
        std::vector<int> seen(exch_out.begin(), exch_out.end());
        seen.push_back(exch[0]);
        std::sort(seen.begin(), seen.end());
        for (int k = 0; k <= total; ++k) REQUIRE(seen[k] == k - 1);  // every id handed on exactly once
    }
    se::set_threads(0);
}

TEST_CASE("math, bit and conversion intrinsics") {
    se::Buffer<float> x(2, "x"), f(8, "f");
    se::Buffer<unsigned> u(9, "u");
    x[0] = 0.75f, x[1] = 4.f;
    se::launch("intrinsics", emu_test::intrinsics, dim3(1), dim3(1), 0, x.data(), f.data(), u.data());
    const std::vector<float> fe = {0.75f, 0.f, 0.1875f, 0.5f, 0.f, 0.75f, 0.75f, 4.f};
    const std::vector<unsigned> ue = {8u, 0x80000000u, 0x77553311u, 31u, 4u, 0x3f800000u, 3u, 2u, 3u};
    CHECK(f.to_vector() == fe);
    CHECK(u.to_vector() == ue);
}

TEST_CASE("2-D and 3-D grid and block indexing") {
    const dim3 grid(3, 4, 2), block(8, 4, 3);
    const unsigned nb = 3 * 4 * 2, nt = 8 * 4 * 3;
    se::Buffer<unsigned> out(nb * nt, "out");
    se::launch("indexing", emu_test::indexing, grid, block, 0, out.data());
    for (unsigned bz = 0; bz < 2; ++bz)
        for (unsigned by = 0; by < 4; ++by)
            for (unsigned bx = 0; bx < 3; ++bx)
                for (unsigned tz = 0; tz < 3; ++tz)
                    for (unsigned ty = 0; ty < 4; ++ty)
                        for (unsigned tx = 0; tx < 8; ++tx) {
                            const unsigned b = (bz * 4 + by) * 3 + bx, t = (tz * 4 + ty) * 8 + tx;
                            REQUIRE(out[b * nt + t] ==
                                    ((bx << 24) | (by << 16) | (bz << 12) | (tx << 8) | (ty << 4) | tz));
                        }
}

TEST_CASE("bf16 conversions and arithmetic, float4 loads") {
    const int n4 = 300;
    se::Buffer<float> in(4 * n4, "in"), rt(n4, "rt"), prod(n4, "prod"), sums(n4, "sums");
    for (int i = 0; i < 4 * n4; ++i) in[i] = std::sin(0.37f * i) * 3.f + (i % 3 == 0 ? 1e-3f : 0.f);
    se::launch("bf16_and_float4", emu_test::bf16_and_float4, dim3(3), dim3(128), 0, in.data(), rt.data(),
               prod.data(), sums.data(), n4);
    for (int i = 0; i < n4; ++i) {
        const float* v = &in[4 * i];
        CHECK(sums[i] == v[0] + v[1] + v[2] + v[3]);
        const float bx = static_cast<float>(sslight::bf16(v[0])), by = static_cast<float>(sslight::bf16(v[1]));
        CHECK(rt[i] == bx);
        CHECK(prod[i] == static_cast<float>(sslight::bf16(bx * by)));
    }
}

TEST_CASE("kernels/common.cuh: a kernel using block_sum runs through its launch helper") {
    const int rows = 5, n = 1000;
    se::Buffer<float> x(rows * n, "x"), out(rows, "out");
    for (int i = 0; i < rows * n; ++i) x[i] = static_cast<float>(i % 17) - 8.f;
    sslight::kernels::emu::launch("test_emu_row_sum", sslight::kernels::emu::test_emu_row_sum_kernel, dim3(rows),
                                  dim3(128), 0, nullptr, x.data(), out.data(), n);
    for (int r = 0; r < rows; ++r) {
        double ref = 0;
        for (int i = 0; i < n; ++i) ref += x[r * n + i];
        CHECK(out[r] == doctest::Approx(ref));
    }
}

TEST_CASE("block and thread order follow the seed") {
    const int blocks = 50, threads = 64;
    se::Buffer<int> counter(2, "counter"), order(blocks, "order"), torder(threads, "torder");
    se::set_threads(1);  // with several OS threads the start order of blocks is a race
    auto run = [&](uint64_t seed) {
        se::set_seed(seed);
        counter.fill(0);
        se::launch("record_order", emu_test::record_order, dim3(blocks), dim3(threads), 0, counter.data(),
                   order.data(), torder.data());
        return std::make_pair(order.to_vector(), torder.to_vector());
    };
    const auto a = run(1), b = run(2), a2 = run(1);
    CHECK(a == a2);
    CHECK(a.first != b.first);
    CHECK(a.second != b.second);
    auto sorted = a.first;
    std::sort(sorted.begin(), sorted.end());
    for (int k = 0; k < blocks; ++k) CHECK(sorted[k] == k);
    se::set_seed(0);
    se::set_threads(0);
}

TEST_CASE("out-of-bounds reads and writes abort with the kernel name and the offset") {
    const int n = 1024;  // a multiple of 16 bytes: the data ends exactly at the guard page
    auto oob = [&](int read_at, int write_at, se::Guard g) {
        return run_in_child([=] {
            se::Buffer<float> in(n, "input", g), out(n, "output", g);
            se::launch("oob_kernel", emu_test::oob, dim3(2), dim3(32), 0, in.data(), out.data(), read_at, write_at);
        });
    };
    const Child r = oob(n, 0, se::Guard::back);
    CHECK(WIFSIGNALED(r.status));
    CHECK(contains(r.err, "out-of-bounds read at byte offset 4096 (+0 bytes past the end) of buffer 'input'"));
    CHECK(contains(r.err, "in kernel oob_kernel, block (1,0,0), thread (3,0,0)"));
    const Child w = oob(0, n + 5, se::Guard::back);
    CHECK(WIFSIGNALED(w.status));
    CHECK(contains(w.err, "out-of-bounds write at byte offset 4116 (+20 bytes past the end) of buffer 'output'"));
    CHECK(contains(w.err, "kernel oob_kernel"));
    const Child u = oob(-2, 0, se::Guard::front);
    CHECK(WIFSIGNALED(u.status));
    CHECK(contains(u.err, "out-of-bounds read at byte offset -8 (8 bytes before the start) of buffer 'input'"));
    const Child ok = oob(n - 1, n - 1, se::Guard::back);
    CHECK(ok.status == 0);
    CHECK(ok.err.empty());
}

TEST_CASE("a write into a buffer's slack bytes is reported after the launch") {
    se::Buffer<float> in(8, "in"), out(5, "small");  // 20 bytes: 12 slack bytes before the guard
    CHECK_THROWS_WITH_AS(se::launch("slack_kernel", emu_test::oob, dim3(2), dim3(32), 0, in.data(), out.data(), 0, 6),
                         doctest::Contains("byte offset 24 (+4 bytes past the end) of buffer 'small'"), se::EmuError);
}

TEST_CASE("divergent barriers and incomplete warp operations throw EmuError, and the emulator recovers") {
    se::Buffer<float> out(256, "out");
    CHECK_THROWS_WITH_AS(se::launch("divergent_exit", emu_test::divergent_exit, dim3(4), dim3(256), 0, out.data()),
                         doctest::Contains("divergent barrier: 100 of 256 threads wait at __syncthreads"),
                         se::EmuError);
    CHECK_THROWS_WITH_AS(se::launch("divergent_exit", emu_test::divergent_exit, dim3(4), dim3(256), 0, out.data()),
                         doctest::Contains("kernel divergent_exit"), se::EmuError);
    CHECK_THROWS_WITH_AS(se::launch("divergent_sites", emu_test::divergent_sites, dim3(2), dim3(64), 0, out.data()),
                         doctest::Contains("wait at different __syncthreads"), se::EmuError);
    CHECK_THROWS_WITH_AS(se::launch("shfl_missing", emu_test::shfl_missing_lanes, dim3(1), dim3(64), 0, out.data()),
                         doctest::Contains("__shfl_down_sync"), se::EmuError);
    CHECK_THROWS_WITH_AS(se::launch("shfl_missing", emu_test::shfl_missing_lanes, dim3(1), dim3(64), 0, out.data()),
                         doctest::Contains("exited: lanes 24-31"), se::EmuError);
    se::Buffer<int> p(64, "p");
    CHECK_THROWS_WITH_AS(se::launch("throws", emu_test::throws, dim3(3), dim3(64), 0, p.data()),
                         doctest::Contains("__trap() at"), se::EmuError);
    CHECK_THROWS_AS(se::launch("too_big", emu_test::throws, dim3(1), dim3(2048), 0, p.data()), se::EmuError);
    CHECK_THROWS_WITH_AS(se::launch("big_smem", emu_test::too_much_static_smem, dim3(1), dim3(32), 0, out.data()),
                         doctest::Contains("49156 bytes of static"), se::EmuError);
    // The fibers of the failed blocks were unwound: the next launches run normally.
    se::Buffer<float> in(256, "in"), sums(1, "sums");
    in.fill(1.f);
    se::launch("tree_sum", emu_test::tree_sum, dim3(1), dim3(256), 0, in.data(), sums.data(), 256);
    CHECK(sums[0] == 256.f);
}

TEST_CASE("overhead per block and per barrier (informational)") {
    se::Buffer<float> in(256 * 200, "in"), out(200, "out");
    in.fill(1.f);
    const auto s0 = se::stats();
    const double t0 = cpu_seconds();
    se::launch("tree_sum", emu_test::tree_sum, dim3(200), dim3(256), 0, in.data(), out.data(), 256 * 200);
    const double dt = cpu_seconds() - t0;
    const auto s1 = se::stats();
    const double per_thread_barrier = dt / static_cast<double>(s1.barriers - s0.barriers) * 1e9;
    MESSAGE("tree_sum 200 blocks x 256 threads x 9 barriers: ", dt * 1e3, " ms CPU, ", per_thread_barrier,
            " ns per thread and barrier, ", dt / 200 * 1e6, " us per block");
    CHECK(out[0] == 256.f);
}

}  // TEST_SUITE("emu")
