// Depthwise 3x3 convolution kernels (kernels/dwconv2d.*) on MobileNetV2's depthwise layers (224 px input and
// the same scaled to 128 and 96 px): forward, backward-input and backward-weight. GPU (batch 256): median of
// cudaEvent-timed repeats with L2 flushed between them, GB/s as the bytes that must move (activations in and
// out once) over time, fraction of 4.3 TB/s HBM, and cuDNN's grouped convolution on the same shape (fastest
// deterministic algorithm, via kernels/conv2d_cuda.cpp) with the ratio cuDNN time / ours. CPU (batch 8): the
// same against the generic grouped im2col + BLAS path of kernels/conv2d_cpu.cpp. --csv for CSV output.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/conv2d.h"
#include "kernels/dwconv2d.h"
#ifdef SSLIGHT_WITH_CUDA
#include "engine/cuda_check.h"
#endif

using namespace sslight;

namespace {

constexpr double kPeakGBs = 4300.0;  // the H200 HBM bandwidth the targets are stated against

struct Layer {
    int C, H, s;  // channels, input height/width at 224 px, stride
};
const Layer kLayers[] = {{32, 112, 1},  {96, 112, 2},  {144, 56, 1}, {144, 56, 2}, {192, 28, 1},
                         {192, 28, 2},  {384, 14, 1},  {576, 14, 1}, {576, 14, 2}, {960, 7, 1}};
const char* kDirs[] = {"fwd", "bwd_input", "bwd_weight"};

struct Options {
    bool csv = false, gpu = true, cpu = true;
    int gpu_batch = 256, cpu_batch = 8, repeats = 10;
    std::vector<int> res{224, 128, 96}, cpu_res{224};
    std::vector<DType> dtypes{DType::bf16, DType::f32};
};

struct Result {
    std::string dir, dtype, cmp;
    int res = 0, N = 0, C = 0, H = 0, s = 0;
    double us = 0, gbs = 0, cmp_us = 0;
};

kernels::DwConv2dParams layer_params(int N, int res, const Layer& l) {
    const int H = l.H * res / 224;
    return kernels::dwconv2d_params(N, H, H, l.C, 3, l.s, 1);
}

// The grouped (groups = C) convolution of the same shape for the generic conv2d kernels.
kernels::Conv2dParams grouped(const kernels::DwConv2dParams& p) {
    kernels::Conv2dParams g;
    g.N = p.B, g.H = p.H, g.W = p.W, g.C = p.C, g.K = p.C, g.kh = g.kw = p.k;
    g.Ho = p.Ho, g.Wo = p.Wo, g.stride_h = g.stride_w = p.stride, g.pad_h = g.pad_w = p.pad, g.groups = p.C;
    return g;
}

// Bytes that must move: forward reads x and writes y; backward-input reads dy and writes dx; backward-weight
// reads x and dy (filters and partial sums are negligible).
double bytes_moved(const kernels::DwConv2dParams& p, size_t elem) {
    const double in = double(p.B) * p.H * p.W * p.C, out = double(p.B) * p.Ho * p.Wo * p.C;
    return (in + out) * double(elem);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double cpu_time_us(const std::function<void()>& fn, int repeats) {
    fn();
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(t);
}

void print_results(const std::vector<Result>& rs, bool csv, const std::string& title, bool gpu) {
    if (csv) {
        std::printf("device,dir,dtype,res,N,H,W,C,stride,us,GBps,frac_peak,cmp,cmp_us,ratio\n");
        for (const Result& r : rs)
            std::printf("%s,%s,%s,%d,%d,%d,%d,%d,%d,%.2f,%.1f,%.3f,%s,%.2f,%.3f\n", gpu ? "gpu" : "cpu",
                        r.dir.c_str(), r.dtype.c_str(), r.res, r.N, r.H, r.H, r.C, r.s, r.us, r.gbs,
                        r.gbs / kPeakGBs, r.cmp.c_str(), r.cmp_us, r.cmp_us > 0 ? r.cmp_us / r.us : 0.0);
        return;
    }
    std::printf("\n%s\n%-10s %-5s %4s %-18s %2s %10s %9s %6s  %-7s %10s %7s\n", title.c_str(), "dir", "dtype", "res",
                "N x H x W x C", "s", "us", "GB/s", gpu ? "%peak" : "", "vs", "cmp us", "ratio");
    for (const Result& r : rs) {
        const std::string shape = std::to_string(r.N) + "x" + std::to_string(r.H) + "x" + std::to_string(r.H) + "x" +
                                  std::to_string(r.C);
        char peak[16] = "";
        if (gpu) std::snprintf(peak, sizeof(peak), "%5.1f%%", 100.0 * r.gbs / kPeakGBs);
        std::printf("%-10s %-5s %4d %-18s %2d %10.1f %9.1f %6s  %-7s %10.1f %6.2fx\n", r.dir.c_str(),
                    r.dtype.c_str(), r.res, shape.c_str(), r.s, r.us, r.gbs, peak, r.cmp.c_str(), r.cmp_us,
                    r.cmp_us > 0 ? r.cmp_us / r.us : 0.0);
    }
    std::printf("(GB/s: activation bytes that must move / time; ratio = %s time / ours, > 1: ours is faster)\n",
                gpu ? "cuDNN" : "im2col");
}

// Per (dir, dtype): mean fraction of peak and geometric mean of the ratio, the numbers the targets name.
void print_summary(const std::vector<Result>& rs) {
    std::map<std::string, std::vector<const Result*>> groups;
    for (const Result& r : rs) groups[r.dir + " " + r.dtype].push_back(&r);
    std::printf("\nsummary (GPU)      mean %%peak   min %%peak   geomean ratio   min ratio\n");
    for (const auto& [key, v] : groups) {
        double sum = 0, mn = 1e9, lr = 0, mr = 1e9;
        int nr = 0;
        for (const Result* r : v) {
            sum += r->gbs / kPeakGBs, mn = std::min(mn, r->gbs / kPeakGBs);
            if (r->cmp_us > 0) lr += std::log(r->cmp_us / r->us), mr = std::min(mr, r->cmp_us / r->us), ++nr;
        }
        std::printf("%-18s %9.1f%% %10.1f%% %14.2fx %10.2fx\n", key.c_str(), 100 * sum / double(v.size()), 100 * mn,
                    nr ? std::exp(lr / nr) : 0.0, nr ? mr : 0.0);
    }
}

// ---- CPU ------------------------------------------------------------------------------------------------------
void bench_cpu(const Options& o, std::vector<Result>& out) {
    for (int res : o.cpu_res)
        for (const Layer& l : kLayers) {
            const kernels::DwConv2dParams p = layer_params(o.cpu_batch, res, l);
            const kernels::Conv2dParams g = grouped(p);
            const size_t nx = size_t(p.B) * p.H * p.W * p.C, ny = size_t(p.B) * p.Ho * p.Wo * p.C;
            std::vector<float> x(nx, 0.5f), dx(nx), y(ny), dy(ny, 0.25f), w(size_t(p.C) * 9, 0.1f), dw(w.size());
            const std::function<void()> ours[] = {
                [&] { kernels::dwconv2d_fwd_cpu<float>(p, x.data(), w.data(), nullptr, y.data()); },
                [&] { kernels::dwconv2d_bwd_input_cpu(p, dy.data(), w.data(), dx.data()); },
                [&] { kernels::dwconv2d_bwd_weight_cpu<float>(p, x.data(), dy.data(), dw.data(), nullptr); }};
            const std::function<void()> generic[] = {
                [&] { kernels::conv2d_fwd_cpu<float>(g, x.data(), w.data(), nullptr, y.data()); },
                [&] { kernels::conv2d_bwd_data_cpu(g, dy.data(), w.data(), dx.data()); },
                [&] { kernels::conv2d_bwd_weight_cpu(g, x.data(), dy.data(), dw.data()); }};
            for (int d = 0; d < 3; ++d) {
                Result r{kDirs[d], "f32", "im2col", res, p.B, p.C, p.H, p.stride};
                r.us = cpu_time_us(ours[d], std::max(1, o.repeats / 3));
                r.gbs = bytes_moved(p, 4) / r.us * 1e-3;
                r.cmp_us = cpu_time_us(generic[d], std::max(1, o.repeats / 5));
                out.push_back(r);
            }
        }
}

// ---- GPU ------------------------------------------------------------------------------------------------------
#ifdef SSLIGHT_WITH_CUDA
// Median of cudaEvent-timed calls on the device's stream after two warm-up calls (which also run cuDNN's
// one-time algorithm search); a 256 MiB memset before each repeat evicts the 50 MB L2.
double gpu_time_us(const std::function<void()>& fn, Device dev, const Tensor& flush, int repeats) {
    const auto s = reinterpret_cast<cudaStream_t>(runtime::stream(dev));
    fn();
    fn();
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r) {
        CUDA_CHECK(cudaMemsetAsync(flush.raw_data(), r & 0xff, flush.nbytes(), s));
        CUDA_CHECK(cudaEventRecord(a, s));
        fn();
        CUDA_CHECK(cudaEventRecord(b, s));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(1e3 * ms);
    }
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    return median(t);
}

template <class T>
void bench_gpu_layer(const Options& o, const kernels::DwConv2dParams& p, int res, const Tensor& flush,
                     std::vector<Result>& out) {
    const Device g = Device::cuda(0);
    const kernels::Stream s = runtime::stream(g);
    const DType dt = dtype_of<T>::value;
    Tensor x = full({p.B, p.H, p.W, p.C}, 0.5, dt, g), dx = empty_like(x);
    Tensor dy = full({p.B, p.Ho, p.Wo, p.C}, 0.25, dt, g), y = empty_like(dy);
    Tensor w = full({p.C, 3, 3, 1}, 0.1, dt, g), dw = zeros_like(w);
    Tensor ws = empty({int64_t(kernels::cuda::dwconv2d_bwd_weight_workspace(p))}, DType::f32, g);
    const T *px = x.data<T>(), *pdy = dy.data<T>(), *pw = w.data<T>();
    T *py = y.data<T>(), *pdx = dx.data<T>(), *pdw = dw.data<T>();
    const std::function<void()> ours[] = {
        [&] { kernels::cuda::dwconv2d_fwd(p, px, pw, static_cast<const T*>(nullptr), py, s); },
        [&] { kernels::cuda::dwconv2d_bwd_input(p, pdy, pw, pdx, s); },
        [&] { kernels::cuda::dwconv2d_bwd_weight(p, px, pdy, pdw, static_cast<T*>(nullptr), ws.data<float>(), s); }};
#ifdef SSLIGHT_WITH_CUDNN
    const kernels::Conv2dParams cp = grouped(p);
    const std::function<void()> cudnn[] = {[&] { kernels::cuda::conv2d_fwd(cp, px, pw, py, g.index); },
                                           [&] { kernels::cuda::conv2d_bwd_data(cp, pdy, pw, pdx, g.index); },
                                           [&] { kernels::cuda::conv2d_bwd_weight(cp, px, pdy, pdw, g.index); }};
#endif
    for (int d = 0; d < 3; ++d) {
        Result r{kDirs[d], dtype_name(dt), "", res, p.B, p.C, p.H, p.stride};
        r.us = gpu_time_us(ours[d], g, flush, o.repeats);
        r.gbs = bytes_moved(p, sizeof(T)) / r.us * 1e-3;
#ifdef SSLIGHT_WITH_CUDNN
        if (kernels::cuda::conv2d_cudnn_available()) {
            r.cmp = "cuDNN";
            r.cmp_us = gpu_time_us(cudnn[d], g, flush, o.repeats);
        }
#endif
        out.push_back(r);
    }
}

void bench_gpu(const Options& o, std::vector<Result>& out) {
    const Tensor flush = empty({int64_t(256) << 20}, DType::u8, Device::cuda(0));
    for (DType dt : o.dtypes)
        for (int res : o.res)
            for (const Layer& l : kLayers) {
                const kernels::DwConv2dParams p = layer_params(o.gpu_batch, res, l);
                if (dt == DType::bf16)
                    bench_gpu_layer<bf16>(o, p, res, flush, out);
                else
                    bench_gpu_layer<float>(o, p, res, flush, out);
            }
}
#endif

std::vector<int> parse_list(const char* s) {
    std::vector<int> v;
    for (const char* p = s; *p;) {
        v.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
    }
    return v;
}

void usage() {
    std::printf("bench_dwconv2d [--csv] [--cpu-only | --gpu-only] [--batch N (GPU, 256)] [--cpu-batch N (8)]\n"
                "               [--res 224,128,96 (GPU)] [--cpu-res 224] [--dtype bf16|f32|both] [--repeats N (10)]\n");
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--csv") o.csv = true;
        else if (a == "--cpu-only") o.gpu = false;
        else if (a == "--gpu-only") o.cpu = false;
        else if (a == "--batch") o.gpu_batch = std::atoi(next), ++i;
        else if (a == "--cpu-batch") o.cpu_batch = std::atoi(next), ++i;
        else if (a == "--res") o.res = parse_list(next), ++i;
        else if (a == "--cpu-res") o.cpu_res = parse_list(next), ++i;
        else if (a == "--repeats") o.repeats = std::max(1, std::atoi(next)), ++i;
        else if (a == "--dtype") {
            const std::string d = next;
            o.dtypes.clear();
            if (d != "f32") o.dtypes.push_back(DType::bf16);
            if (d != "bf16") o.dtypes.push_back(DType::f32);
            ++i;
        } else {
            usage();
            return a == "--help" || a == "-h" ? 0 : 2;
        }
    }
    if (o.gpu) {
#ifdef SSLIGHT_WITH_CUDA
        if (runtime::cuda_device_count() > 0) {
            std::vector<Result> rs;
            bench_gpu(o, rs);
            print_results(rs, o.csv, "depthwise 3x3 on the GPU (" + std::to_string(o.gpu_batch) + " images)", true);
            if (!o.csv) print_summary(rs);
        } else {
            std::printf("GPU part skipped: %s\n", runtime::cuda_unavailable_reason().c_str());
        }
#else
        std::printf("GPU part skipped: built without CUDA\n");
#endif
    }
    if (o.cpu) {
        std::vector<Result> rs;
        bench_cpu(o, rs);
        print_results(rs, o.csv, "depthwise 3x3 on the CPU (" + std::to_string(o.cpu_batch) + " images, f32)", false);
    }
    return 0;
}
