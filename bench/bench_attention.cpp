// Fused self-attention (kernels/attention.*) at the ViT-Tiny / ViT-Small shapes [B, heads 3 | 6, T, 64] for the
// token counts of 96, 128 and 224 px crops (T = 37, 65, 197): forward and forward+backward time and TFLOP/s
// (model FLOPs: 4 B H T² D forward, 8 B H T² D backward, recomputation not counted), against the unfused path on
// the same shapes built from the engine's GEMM and softmax kernels (S = scale Q Kᵀ, P = softmax(S), O = P V and
// its five-kernel backward; cuBLAS on the GPU, OpenBLAS on the CPU), with the ratio unfused time / fused time.
// GPU: batch 128, bf16 and f32, cudaEvent-timed means over repeated launches. CPU: batch 4, f32. --csv for CSV.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "engine/tensor.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/softmax.h"
#ifdef SSLIGHT_WITH_CUDA
#include "engine/cuda_check.h"
#endif

using namespace sslight;

namespace {

struct Model {
    const char* name;
    int heads;
};
const Model kModels[] = {{"ViT-Ti", 3}, {"ViT-S", 6}};
const int kTokens[] = {37, 65, 197};
constexpr int kHeadDim = 64;

struct Options {
    bool csv = false, gpu = true, cpu = true;
    int gpu_batch = 128, cpu_batch = 4, repeats = 20;
};

// All buffers of one shape on one device: inputs, outputs, gradients, lse, the backward workspace and the
// unfused path's T x T score, probability and gradient matrices.
struct Buffers {
    Tensor q, k, v, o, dout, dq, dk, dv, lse, ws, s, pr, dp, ds;
    Buffers(const kernels::AttentionParams& p, DType dt, Device d) {
        const Shape x{p.B, p.H, p.T, p.D}, tt{p.B, p.H, p.T, p.T};
        q = full(x, 0.5, dt, d), k = full(x, -0.25, dt, d), v = full(x, 0.75, dt, d), dout = full(x, 0.1, dt, d);
        o = empty(x, dt, d), dq = empty(x, dt, d), dk = empty(x, dt, d), dv = empty(x, dt, d);
        lse = empty({p.B, p.H, p.T}, DType::f32, d), ws = empty({p.B, p.H, p.T}, DType::f32, d);
        s = empty(tt, dt, d), pr = empty(tt, dt, d), dp = empty(tt, dt, d), ds = empty(tt, dt, d);
    }
};

// One batched GEMM per (batch, head): C (M x N) = alpha op(A) op(B), op(A): M x K, op(B): K x N.
kernels::GemmParams bgemm(const kernels::AttentionParams& p, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                          double alpha) {
    kernels::GemmParams g = kernels::gemm_params(M, N, K, ta, tb);
    g.batch = int64_t(p.B) * p.H;
    g.alpha = static_cast<float>(alpha);
    return g;
}

// The fused and the unfused path on one device: T = float on the CPU; float or bf16 on the GPU.
template <class T, bool Gpu>
struct Paths {
    const kernels::AttentionParams& p;
    Buffers& b;
    Device dev;

    template <class X>
    X* P(const Tensor& t) const {
        return t.data<X>();
    }
    void gemm(const kernels::GemmParams& g, const Tensor& a, const Tensor& bb, const Tensor& c) const {
#ifdef SSLIGHT_WITH_CUDA
        if constexpr (Gpu) return kernels::cuda::gemm(g, P<T>(a), P<T>(bb), P<T>(c), runtime::cublas_handle(dev));
#endif
        if constexpr (!Gpu) kernels::gemm_cpu(g, P<T>(a), P<T>(bb), P<T>(c));
    }
    void softmax(bool backward) const {
        const kernels::SoftmaxParams sp{int64_t(p.B) * p.H * p.T, p.T};
#ifdef SSLIGHT_WITH_CUDA
        const kernels::Stream st = runtime::stream(dev);
        if constexpr (Gpu) {
            if (backward) return kernels::cuda::softmax_bwd(sp, P<T>(b.pr), P<T>(b.dp), P<T>(b.ds), st);
            return kernels::cuda::softmax_fwd(sp, P<T>(b.s), P<T>(b.pr), st);
        }
#endif
        if constexpr (!Gpu) {
            if (backward) return kernels::softmax_bwd_cpu(sp, P<T>(b.pr), P<T>(b.dp), P<T>(b.ds));
            kernels::softmax_fwd_cpu(sp, P<T>(b.s), P<T>(b.pr));
        }
    }
    void fused_fwd() const {
#ifdef SSLIGHT_WITH_CUDA
        if constexpr (Gpu)
            return kernels::cuda::attention_fwd(p, P<T>(b.q), P<T>(b.k), P<T>(b.v), P<T>(b.o), P<float>(b.lse),
                                                runtime::stream(dev));
#endif
        if constexpr (!Gpu) kernels::attention_fwd_cpu(p, P<T>(b.q), P<T>(b.k), P<T>(b.v), P<T>(b.o), P<T>(b.lse));
    }
    void fused_bwd() const {
#ifdef SSLIGHT_WITH_CUDA
        if constexpr (Gpu)
            return kernels::cuda::attention_bwd(p, P<T>(b.q), P<T>(b.k), P<T>(b.v), P<T>(b.o), P<T>(b.dout),
                                                P<float>(b.lse), P<T>(b.dq), P<T>(b.dk), P<T>(b.dv), P<float>(b.ws),
                                                runtime::stream(dev));
#endif
        if constexpr (!Gpu)
            kernels::attention_bwd_cpu(p, P<T>(b.q), P<T>(b.k), P<T>(b.v), P<T>(b.o), P<T>(b.dout), P<T>(b.lse),
                                       P<T>(b.dq), P<T>(b.dk), P<T>(b.dv));
    }
    void unfused_fwd() const {
        gemm(bgemm(p, p.T, p.T, p.D, false, true, p.scale), b.q, b.k, b.s);  // S = scale Q Kᵀ
        softmax(false);                                                       // P = softmax(S)
        gemm(bgemm(p, p.T, p.D, p.T, false, false, 1), b.pr, b.v, b.o);      // O = P V
    }
    void unfused_bwd() const {
        gemm(bgemm(p, p.T, p.D, p.T, true, false, 1), b.pr, b.dout, b.dv);       // dV = Pᵀ dO
        gemm(bgemm(p, p.T, p.T, p.D, false, true, 1), b.dout, b.v, b.dp);        // dP = dO Vᵀ
        softmax(true);                                                            // dS = P (dP - rowsum(dP P))
        gemm(bgemm(p, p.T, p.D, p.T, false, false, p.scale), b.ds, b.k, b.dq);   // dQ = scale dS K
        gemm(bgemm(p, p.T, p.D, p.T, true, false, p.scale), b.ds, b.q, b.dk);    // dK = scale dSᵀ Q
    }
};

#ifdef SSLIGHT_WITH_CUDA
// Mean microseconds per call over `repeats` back-to-back calls on the device's stream, after three warm-up calls.
double gpu_time_us(const std::function<void()>& fn, Device dev, int repeats) {
    const auto s = reinterpret_cast<cudaStream_t>(runtime::stream(dev));
    for (int i = 0; i < 3; ++i) fn();
    cudaEvent_t a, e;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&e));
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < repeats; ++i) fn();
    CUDA_CHECK(cudaEventRecord(e, s));
    CUDA_CHECK(cudaEventSynchronize(e));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, e));
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(e));
    return 1e3 * ms / repeats;
}
#endif

double time_us(const std::function<void()>& fn, Device dev, int repeats) {
#ifdef SSLIGHT_WITH_CUDA
    if (dev.is_cuda()) return gpu_time_us(fn, dev, repeats);
#endif
    return 1e6 * bench::time_median(fn, dev, 1, std::max(3, repeats / 4));
}

template <class T, bool Gpu>
void bench_shape(const Options& o, const Model& m, int T_, int B, Device dev, bench::Table& table,
                 std::vector<double>& ratios) {
    const kernels::AttentionParams p = kernels::attention_params_bhtd(B, m.heads, T_, kHeadDim, 0.125);
    const DType dt = dtype_of<T>::value;
    Buffers buf(p, dt, dev);
    const Paths<T, Gpu> path{p, buf, dev};
    const double flops_fwd = 4.0 * B * m.heads * double(T_) * T_ * kHeadDim, unit = Gpu ? 1e-6 : 1e-3;
    const std::string shape = std::string(m.name) + " " + str(B, "x", m.heads, "x", T_, "x", kHeadDim);
    for (int dir = 0; dir < 2; ++dir) {
        bench::Row r;
        r.name = std::string(dir ? "fwd+bwd " : "fwd ") + dtype_name(dt);
        r.shape = shape;
        r.unit = Gpu ? "TF/s" : "GF/s";
        const double flops = dir ? 3 * flops_fwd : flops_fwd;
        r.us = time_us(
            [&] {
                path.fused_fwd();
                if (dir) path.fused_bwd();
            },
            dev, o.repeats);
        r.cmp_name = Gpu ? "cuBLAS+softmax" : "BLAS+softmax";
        r.cmp_us = time_us(
            [&] {
                path.unfused_fwd();
                if (dir) path.unfused_bwd();
            },
            dev, o.repeats);
        r.rate = flops / r.us * unit, r.cmp_rate = flops / r.cmp_us * unit;
        ratios.push_back(r.cmp_us / r.us);
        table.add(r);
    }
}

double geomean(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += std::log(x);
    return v.empty() ? 0 : std::exp(s / double(v.size()));
}

void usage() {
    std::printf("bench_attention [--csv] [--cpu-only | --gpu-only] [--batch N (GPU, 128)] [--cpu-batch N (4)]\n"
                "                [--repeats N (20)]\n");
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : "1";
        if (a == "--csv") o.csv = true;
        else if (a == "--cpu-only") o.gpu = false;
        else if (a == "--gpu-only") o.cpu = false;
        else if (a == "--batch") o.gpu_batch = std::max(1, std::atoi(next)), ++i;
        else if (a == "--cpu-batch") o.cpu_batch = std::max(1, std::atoi(next)), ++i;
        else if (a == "--repeats") o.repeats = std::max(1, std::atoi(next)), ++i;
        else {
            usage();
            return a == "--help" || a == "-h" ? 0 : 2;
        }
    }
    if (o.gpu) {
#ifdef SSLIGHT_WITH_CUDA
        if (runtime::cuda_device_count() > 0) {
            bench::Table table(o.csv);
            std::vector<double> ratios;
            const Device g = Device::cuda(0);
            for (const Model& m : kModels)
                for (int t : kTokens) {
                    bench_shape<bf16, true>(o, m, t, o.gpu_batch, g, table, ratios);
                    bench_shape<float, true>(o, m, t, o.gpu_batch, g, table, ratios);
                }
            table.print("fused attention on the GPU (batch " + std::to_string(o.gpu_batch) + ", D = 64)");
            if (!o.csv) std::printf("geomean ratio (GPU): %.2fx\n", geomean(ratios));
        } else {
            std::printf("GPU part skipped: %s\n", runtime::cuda_unavailable_reason().c_str());
        }
#else
        std::printf("GPU part skipped: built without CUDA\n");
#endif
    }
    if (o.cpu) {
        bench::Table table(o.csv);
        std::vector<double> ratios;
        for (const Model& m : kModels)
            for (int t : kTokens) bench_shape<float, false>(o, m, t, o.cpu_batch, Device::cpu(), table, ratios);
        table.print("fused attention on the CPU (batch " + std::to_string(o.cpu_batch) + ", D = 64, f32)");
        if (!o.csv) std::printf("geomean ratio (CPU): %.2fx\n", geomean(ratios));
    }
    return 0;
}
