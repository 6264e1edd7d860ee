// Backbone throughput: images/s of the forward (eval mode, no autograd: inference / a no-grad teacher) and of
// forward + backward (train mode: BN batch statistics, the student's step) per backbone and input size, on the
// CPU (batch 8) and, when usable, the GPU (batch 128). There is no in-process PyTorch to compare with, so the
// comparison column is the achieved FLOP rate (models/flops.h: 2 x MACs per image, x3 for forward + backward)
// against the machine's GEMM ceiling measured in the same run (cblas_sgemm on the CPU, the engine's cuBLAS
// matmul on the GPU): "% of GEMM" says how much of the dense-math peak the whole network reaches.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "engine/autograd.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/random.h"
#include "models/backbone.h"
#include "models/flops.h"

using namespace sslight;

namespace {

struct Setup {
    Device dev;
    int64_t batch;
    int warmup, repeats;
    double gemm_gflops;  // the ceiling
};

// The ceiling: the fastest of 10 runs (a ceiling, so the best run, not the median: on a shared machine the
// median mostly measures the neighbours) of two GEMMs, a square one and the im2col shape of ResNet's 3x3
// convs at 56x56 (M = 8*56*56, K = 576, N = 64).
double cpu_gemm_gflops() {
    double best = 0;
    const int shapes[2][3] = {{1024, 1024, 1024}, {25088, 576, 64}};
    for (const auto& s : shapes) {
        const int m = s[0], k = s[1], n = s[2];
        std::vector<float> a(static_cast<size_t>(m) * k, 0.5f), b(static_cast<size_t>(k) * n, 0.25f),
            c(static_cast<size_t>(m) * n);
        for (int rep = 0; rep < 10; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f,
                        c.data(), n);
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, 2.0 * m * n * k / sec * 1e-9);
        }
    }
    return best;
}

double gpu_gemm_gflops(Device d) {
    NoGradGuard ng;
    const int64_t n = 4096;
    Tensor a = rand({n, n}, RngKey{1, 0}, DType::f32, d), b = rand({n, n}, RngKey{2, 0}, DType::f32, d);
    const double sec = bench::time_median([&] { matmul(a, b); }, d, 2, 10);
    return 2.0 * n * n * n / sec * 1e-9;
}

void bench_backbone(const std::string& name, int64_t px, const Setup& s) {
    nn::manual_seed(0);
    auto m = models::make_backbone(name);
    m->to(s.dev);
    const double img_flops = static_cast<double>(models::count_flops(*m, px, px).flops());
    Tensor x = rand({s.batch, px, px, 3}, RngKey{3, static_cast<uint64_t>(px)}, DType::f32, s.dev);
    m->eval();
    const double fwd = bench::time_median(
        [&] {
            NoGradGuard ng;
            m->forward_features(x);
        },
        s.dev, s.warmup, s.repeats);
    m->train();
    const double step = bench::time_median(
        [&] {
            m->zero_grad();
            sum(m->forward_features(x)).backward();
        },
        s.dev, s.warmup, s.repeats);
    const struct {
        const char* pass;
        double sec, flops;
    } rows[2] = {{"forward", fwd, img_flops * s.batch}, {"fwd+bwd", step, 3 * img_flops * s.batch}};
    for (const auto& r : rows) {
        const double gf = r.flops / r.sec * 1e-9;
        std::printf("%-13s %4lld %-8s %6lld %10.1f %9.1f %10.1f %10.1f %8.1f%%\n", name.c_str(),
                    static_cast<long long>(px), r.pass, static_cast<long long>(s.batch), r.sec * 1e3,
                    s.batch / r.sec, gf, s.gemm_gflops, 100.0 * gf / s.gemm_gflops);
    }
    std::fflush(stdout);
}

void run(const Setup& s, const std::vector<std::string>& names, const std::vector<int64_t>& sizes) {
    std::printf("\nbackbones on %s, batch %lld (GEMM ceiling %.1f GFLOP/s)\n", s.dev.str().c_str(),
                static_cast<long long>(s.batch), s.gemm_gflops);
    std::printf("%-13s %4s %-8s %6s %10s %9s %10s %10s %9s\n", "backbone", "px", "pass", "batch", "ms/iter", "img/s",
                "GFLOP/s", "GEMM GF/s", "of GEMM");
    for (const std::string& n : names)
        for (int64_t px : sizes) bench_backbone(n, px, s);
}

}  // namespace

int main(int argc, char** argv) {
    bool cpu = true, gpu = true;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--gpu-only") == 0) cpu = false;
        if (std::strcmp(argv[i], "--cpu-only") == 0) gpu = false;
    }
    const std::vector<std::string> names = models::backbone_names();
    if (cpu) run({Device::cpu(), 8, 1, 3, cpu_gemm_gflops()}, names, {224, 96});
    if (gpu && runtime::cuda_device_count() > 0) {
        const Device d = Device::cuda(0);
        run({d, 128, 2, 10, gpu_gemm_gflops(d)}, names, {224, 128, 96});
    } else if (gpu) {
        std::printf("no GPU: %s (CPU table only)\n", runtime::cuda_unavailable_reason().c_str());
    }
    return 0;
}
