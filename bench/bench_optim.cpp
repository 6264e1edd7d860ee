// Fused multi-tensor optimizer updates (kernels/optim.h) on the parameter lists of two SSL backbones:
// torchvision ResNet18 and MobileNetV2 without classifier (BN weights/biases included). For LARS (norm pass +
// update), SGD with momentum and AdamW: the fused path (GPU: kMtaMaxTensors tensors per launch; CPU: one
// OpenMP loop over every (tensor, chunk)) against a loop over tensors (GPU: the same kernels launched once per
// tensor; CPU: a plain OpenMP loop per tensor). µs per step and GB/s of the bytes a step must move
// (LARS 28 B, SGD 20 B, AdamW 28 B per f32 parameter). --csv for CSV, --cpu-only / --gpu-only.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "engine/tensor.h"
#include "kernels/optim.h"

using namespace sslight;

namespace {

// Parameter shapes as element counts, in registration order.
std::vector<int64_t> resnet18() {
    std::vector<int64_t> n = {64 * 7 * 7 * 3, 64, 64};
    auto conv_bn = [&](int64_t out, int64_t k, int64_t in) { n.insert(n.end(), {out * k * k * in, out, out}); };
    int64_t in = 64;
    for (int64_t out : {64, 128, 256, 512})
        for (int b = 0; b < 2; ++b) {
            conv_bn(out, 3, in);
            conv_bn(out, 3, out);
            if (b == 0 && out != in) conv_bn(out, 1, in);
            in = out;
        }
    return n;
}
std::vector<int64_t> mobilenet_v2() {
    std::vector<int64_t> n = {32 * 3 * 3 * 3, 32, 32};
    auto conv_bn = [&](int64_t out, int64_t k, int64_t in_per_group) {
        n.insert(n.end(), {out * k * k * in_per_group, out, out});
    };
    const int cfg[7][3] = {{1, 16, 1}, {6, 24, 2}, {6, 32, 3}, {6, 64, 4}, {6, 96, 3}, {6, 160, 3}, {6, 320, 1}};
    int64_t in = 32;
    for (const auto& c : cfg)
        for (int r = 0; r < c[2]; ++r) {
            const int64_t hidden = in * c[0];
            if (c[0] != 1) conv_bn(hidden, 1, in);
            conv_bn(hidden, 3, 1);  // depthwise
            conv_bn(c[1], 1, hidden);
            in = c[1];
        }
    conv_bn(1280, 1, in);
    return n;
}

struct Model {
    const char* name;
    std::vector<int64_t> numel;
    int64_t total() const {
        int64_t t = 0;
        for (int64_t v : numel) t += v;
        return t;
    }
};

const char* kOpt[] = {"lars", "sgd_momentum", "adamw"};
const double kBytesPerParam[] = {28, 20, 28};

// f32 storage for one model: p, g, m, v per tensor, laid out back to back like a real parameter list.
struct ParamSet {
    std::vector<float*> p, g, m, v;
    std::vector<Tensor> keep;
    ParamSet(const Model& model, Device dev) {
        for (std::vector<float*>* list : {&p, &g, &m, &v}) {
            keep.push_back(full({model.total()}, list == &g ? 1e-3 : 0.5, DType::f32, dev));
            float* base = keep.back().data<float>();
            for (int64_t n : model.numel) list->push_back(base), base += n;
        }
    }
    std::vector<kernels::OptimSlot<float>> slots(const Model& model, size_t first, size_t count) const {
        std::vector<kernels::OptimSlot<float>> out;
        for (size_t k = first; k < first + count; ++k)
            out.push_back({p[k], g[k], m[k], v[k], model.numel[k], 0.1, k % 3 ? 0.0 : 1e-6, k % 3 != 1, 5});
        return out;
    }
};

// ---- CPU: the fused kernels vs a plain per-tensor loop ------------------------------------------------------
void naive_cpu(int opt, const kernels::OptimSlot<float>& s) {
    const int64_t n = s.numel;
    const float lr = float(s.lr), wd = float(s.weight_decay);
    if (opt == 0) {
        double pp = 0, dd = 0;
#pragma omp parallel for reduction(+ : pp, dd)
        for (int64_t i = 0; i < n; ++i) {
            const float d = s.grad[i] + wd * s.param[i];
            pp += double(s.param[i]) * s.param[i], dd += double(d) * d;
        }
        const float q = s.lars_adapt && pp > 0 && dd > 0 ? float(0.001 * std::sqrt(pp) / std::sqrt(dd)) : 1.f;
#pragma omp parallel for
        for (int64_t i = 0; i < n; ++i) {
            s.buf1[i] = 0.9f * s.buf1[i] + (s.grad[i] + wd * s.param[i]) * q;
            s.param[i] -= lr * s.buf1[i];
        }
    } else if (opt == 1) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; ++i) {
            s.buf1[i] = 0.9f * s.buf1[i] + s.grad[i] + wd * s.param[i];
            s.param[i] -= lr * s.buf1[i];
        }
    } else {
        const float step_size = float(s.lr / (1 - std::pow(0.9, 5))), bc2 = float(std::sqrt(1 - std::pow(0.999, 5)));
#pragma omp parallel for
        for (int64_t i = 0; i < n; ++i) {
            const float g = s.grad[i];
            s.buf1[i] = 0.9f * s.buf1[i] + 0.1f * g;
            s.buf2[i] = 0.999f * s.buf2[i] + 0.001f * g * g;
            s.param[i] = s.param[i] * (1 - lr * wd) - step_size * (s.buf1[i] / (std::sqrt(s.buf2[i]) / bc2 + 1e-8f));
        }
    }
}

void fused_cpu(int opt, const std::vector<kernels::OptimSlot<float>>& slots) {
    if (opt == 0) kernels::lars_step_cpu(slots, kernels::LarsHyper{}, nullptr);
    if (opt == 1) kernels::sgd_step_cpu(slots, kernels::SgdHyper{0.9, false});
    if (opt == 2) kernels::adamw_step_cpu(slots, kernels::AdamWHyper{});
}

void bench_cpu(const Model& model, bench::Table& table) {
    ParamSet st(model, Device::cpu());
    const auto all = st.slots(model, 0, model.numel.size());
    for (int opt = 0; opt < 3; ++opt) {
        bench::Row r;
        r.name = std::string("cpu ") + kOpt[opt];
        r.shape = str(model.name, " ", model.numel.size(), "t");
        r.unit = "GB/s";
        r.us = 1e6 * bench::time_median([&] { fused_cpu(opt, all); }, Device::cpu(), 1, 5);
        r.cmp_name = "loop/tensor";
        r.cmp_us = 1e6 * bench::time_median([&] { for (const auto& s : all) naive_cpu(opt, s); }, Device::cpu(), 1, 5);
        const double bytes = kBytesPerParam[opt] * double(model.total());
        r.rate = bytes / r.us * 1e-3, r.cmp_rate = bytes / r.cmp_us * 1e-3;
        table.add(r);
    }
}

// ---- GPU: one launch sequence per kMtaMaxTensors tensors vs one per tensor ------------------------------------
#ifdef SSLIGHT_WITH_CUDA
void fused_gpu(int opt, const std::vector<kernels::OptimSlot<float>>& slots, float* ws, float* sums,
               kernels::Stream s) {
    if (opt == 0) kernels::cuda::lars_step(slots, kernels::LarsHyper{}, ws, sums, s);
    if (opt == 1) kernels::cuda::sgd_step(slots, kernels::SgdHyper{0.9, false}, s);
    if (opt == 2) kernels::cuda::adamw_step(slots, kernels::AdamWHyper{}, s);
}

void bench_gpu(const Model& model, bench::Table& table) {
    const Device dev = Device::cuda(0);
    const kernels::Stream s = runtime::stream(dev);
    ParamSet st(model, dev);
    const int64_t wsn = int64_t(kernels::cuda::mta_workspace(model.numel));
    Tensor ws = empty({wsn + 2 * int64_t(model.numel.size())}, DType::f32, dev);
    float *w = ws.data<float>(), *sums = w + wsn;
    const auto all = st.slots(model, 0, model.numel.size());
    std::vector<std::vector<kernels::OptimSlot<float>>> single;
    for (size_t k = 0; k < model.numel.size(); ++k) single.push_back(st.slots(model, k, 1));
    for (int opt = 0; opt < 3; ++opt) {
        bench::Row r;
        r.name = std::string("gpu ") + kOpt[opt];
        r.shape = str(model.name, " ", model.numel.size(), "t");
        r.unit = "GB/s";
        r.us = 1e6 * bench::time_median([&] { fused_gpu(opt, all, w, sums, s); }, dev, 5, 50);
        r.cmp_name = "launch/tensor";
        const auto per_tensor = [&] {
            for (size_t k = 0; k < single.size(); ++k) fused_gpu(opt, single[k], w, sums + 2 * k, s);
        };
        r.cmp_us = 1e6 * bench::time_median(per_tensor, dev, 5, 50);
        const double bytes = kBytesPerParam[opt] * double(model.total());
        r.rate = bytes / r.us * 1e-3, r.cmp_rate = bytes / r.cmp_us * 1e-3;
        table.add(r);
    }
}
#endif

}  // namespace

int main(int argc, char** argv) {
    bool csv = false, cpu = true, gpu = true;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--csv")) csv = true;
        if (!std::strcmp(argv[i], "--cpu-only")) gpu = false;
        if (!std::strcmp(argv[i], "--gpu-only")) cpu = false;
    }
    const Model models[] = {{"resnet18", resnet18()}, {"mobilenet_v2", mobilenet_v2()}};
    if (!csv)
        for (const Model& m : models)
            std::printf("%s: %zu tensors, %.2fM parameters\n", m.name, m.numel.size(), double(m.total()) * 1e-6);
    bench::Table table(csv);
    if (cpu)
        for (const Model& m : models) bench_cpu(m, table);
#ifdef SSLIGHT_WITH_CUDA
    if (gpu && runtime::cuda_device_count() > 0)
        for (const Model& m : models) bench_gpu(m, table);
    else if (gpu && !csv)
        std::printf("GPU part skipped: %s\n", runtime::cuda_unavailable_reason().c_str());
#else
    if (gpu && !csv) std::printf("GPU part skipped: built without CUDA\n");
#endif
    table.print("fused multi-tensor optimizer step vs a loop over tensors (median)");
    return 0;
}
