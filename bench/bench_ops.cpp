// First engine benchmark: matmul and a few element-wise ops through the op layer (allocation, dispatch,
// autograd bookkeeping included), on the CPU and, when usable, the GPU. Comparisons measured in the same
// run: a raw cblas_sgemm call for matmul (the op's overhead over the library) and a plain memcpy of the
// same bytes for the element-wise ops (the machine's streaming ceiling).
#include <cblas.h>

#include <cstring>
#include <vector>

#include "bench/harness.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/random.h"
#include "engine/tensor.h"

using namespace sslight;

namespace {

Tensor rand_on(const Shape& s, uint64_t seed, Device d) {
    Tensor t = rand(s, RngKey{seed, 0}, DType::f32, Device::cpu());
    return t.to(d);
}

void bench_matmul(bench::Table& table, Device d, int64_t m, int64_t k, int64_t n) {
    Tensor a = rand_on({m, k}, 1, d), b = rand_on({k, n}, 2, d);
    const double flops = 2.0 * m * k * n;
    bench::Row r{"matmul", str(m, "x", k, "x", n), "GF/s"};
    r.us = 1e6 * bench::time_median([&] { matmul(a, b); }, d);
    r.rate = flops / r.us * 1e-3;
    if (d.is_cpu()) {
        std::vector<float> c(static_cast<size_t>(m * n));
        const float* pa = a.data<float>();
        const float* pb = b.data<float>();
        r.cmp_name = "cblas_sgemm";
        r.cmp_us = 1e6 * bench::time_median(
                             [&] {
                                 cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                                             static_cast<int>(n), static_cast<int>(k), 1.f, pa,
                                             static_cast<int>(k), pb, static_cast<int>(n), 0.f, c.data(),
                                             static_cast<int>(n));
                             },
                             d);
        r.cmp_rate = flops / r.cmp_us * 1e-3;
    }
    table.add(r);
}

void bench_elementwise(bench::Table& table, Device d, int64_t n) {
    Tensor x = rand_on({n}, 3, d), y = rand_on({n}, 4, d);
    Tensor scratch = empty({n}, DType::f32, d);
    // The ceiling: copying the same number of bytes (read + write) as a unary op.
    const double copy_us = 1e6 * bench::time_median(
                                     [&] { runtime::copy(scratch.raw_data(), d, x.raw_data(), d, x.nbytes()); }, d);
    struct Case {
        const char* name;
        std::function<void()> fn;
        int bytes_per_elem;
    } cases[] = {
        {"add", [&] { add(x, y); }, 12},
        {"mul_scalar", [&] { mul(x, 1.5); }, 8},
        {"gelu", [&] { gelu(x); }, 8},
        {"exp", [&] { exp(x); }, 8},
    };
    for (const Case& c : cases) {
        bench::Row r{c.name, str(n), "GB/s"};
        r.us = 1e6 * bench::time_median(c.fn, d);
        r.rate = static_cast<double>(n) * c.bytes_per_elem / r.us * 1e-3;
        r.cmp_name = "memcpy(same B)";
        // memcpy moves 8 bytes per element; scale its time to this op's byte count.
        r.cmp_us = copy_us * c.bytes_per_elem / 8.0;
        r.cmp_rate = static_cast<double>(n) * 8 / copy_us * 1e-3;
        table.add(r);
    }
}

}  // namespace

int main(int argc, char** argv) {
    bool csv = argc > 1 && std::strcmp(argv[1], "--csv") == 0;
    std::vector<Device> devices{Device::cpu()};
    if (runtime::cuda_device_count() > 0) devices.push_back(Device::cuda(0));
    else if (!csv) std::printf("no GPU: %s (CPU tables only)\n", runtime::cuda_unavailable_reason().c_str());
    NoGradGuard ng;
    for (Device d : devices) {
        bench::Table table(csv);
        const bool gpu = d.is_cuda();
        bench_matmul(table, d, 256, 256, 256);
        bench_matmul(table, d, 1024, 1024, 1024);
        if (gpu) bench_matmul(table, d, 4096, 4096, 4096);
        bench_matmul(table, d, 8192, 192, 576);  // ViT-Tiny qkv projection over 128 images x 64 tokens
        bench_elementwise(table, d, 1 << 20);
        bench_elementwise(table, d, gpu ? (1 << 28) : (1 << 24));
        table.print("engine ops on " + d.str());
    }
    return 0;
}
