// Photometric augmentation (kernels/augment.*) on multi-crop samples: views drawn from a recipe (DINO SSLight
// CNN: 2x224 + 6x128; DINO ViT baseline: 2x224 + 10x96), u8 crops in, normalised f32 NHWC out. CPU: one
// core (the loader calls the kernel from its worker threads), samples/s and images/s against the naive
// per-op reference of tests/augment_reference.h (whole-image passes, 2-D blur kernel) with the ratio naive
// time / ours. GPU (when present): a batch of 128 samples per resolution group, f32 and bf16 outputs.
// Options: --samples N (CPU samples per repeat, default 8), --repeats N, --no-gpu.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/harness.h"
#include "data/augment_params.h"
#include "data/recipe.h"
#include "engine/tensor.h"
#include "kernels/augment.h"
#include "tests/augment_reference.h"

using namespace sslight;

namespace {

// One resolution group of a batch: B crops of S x S with their drawn parameters.
struct Group {
    kernels::AugmentBatch p;
    std::vector<uint8_t> in;
    std::vector<kernels::AugmentParams> aug;
    std::vector<float> out;
};

std::vector<Group> make_groups(const data::ViewRecipe& r, int samples, uint64_t seed) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::vector<Group> groups;
    for (int kind = 0; kind < 2; ++kind) {
        const std::vector<data::ViewSpec>& views = kind == 0 ? r.globals : r.locals;
        Group g;
        g.p.B = samples * static_cast<int>(views.size());
        g.p.H = g.p.W = views[0].size;
        g.p.threads = 1;
        g.in.resize(static_cast<size_t>(g.p.B) * g.p.H * g.p.W * 3);
        for (uint8_t& v : g.in) v = static_cast<uint8_t>(rng() >> 24);
        for (int s = 0; s < samples; ++s)
            for (size_t v = 0; v < views.size(); ++v) {
                const int view = static_cast<int>(kind == 0 ? v : r.globals.size() + v);
                g.aug.push_back(data::draw_augment(views[v], seed, 0, s, view));
            }
        g.out.resize(g.in.size());
        groups.push_back(std::move(g));
    }
    return groups;
}

std::string recipe_label(const data::ViewRecipe& r) {
    return "2x" + std::to_string(r.globals[0].size) + "+" + std::to_string(r.locals.size()) + "x" +
           std::to_string(r.locals[0].size);
}

void bench_cpu(const char* name, const data::ViewRecipe& r, int samples, int repeats) {
    std::vector<Group> groups = make_groups(r, samples, 2023);
    const auto ours = [&] {
        for (Group& g : groups) kernels::augment_fwd_cpu(g.p, g.in.data(), g.aug.data(), g.out.data());
    };
    const auto naive = [&] {
        for (Group& g : groups) test::ref_augment<float>(g.p, g.in.data(), g.aug.data(), g.out.data());
    };
    const double t = bench::time_median(ours, Device::cpu(), 1, repeats);
    const double tn = bench::time_median(naive, Device::cpu(), 0, std::max(1, repeats / 3));
    const int views = r.num_views();
    std::printf("%-26s %-14s %10.0f %10.1f %10.0f %12.0f %10.1f %7.2fx\n", name, recipe_label(r).c_str(),
                t / samples * 1e6, samples / t, samples * views / t, tn / samples * 1e6, samples / tn, tn / t);
}

#ifdef SSLIGHT_WITH_CUDA
// A group's buffers on the GPU: crops, parameters (bytes), the contrast-mean scratch and the output.
struct DevGroup {
    Tensor in, aug, ws, out;
};

template <class T>
void bench_gpu(const char* name, const data::ViewRecipe& r, int samples, int repeats) {
    const Device dev = Device::cuda(0);
    const DType dt = std::is_same<T, bf16>::value ? DType::bf16 : DType::f32;
    std::vector<Group> groups = make_groups(r, samples, 2024);
    std::vector<DevGroup> d;
    for (const Group& g : groups) {
        Tensor in = empty({static_cast<int64_t>(g.in.size())}, DType::u8);
        std::memcpy(in.data<uint8_t>(), g.in.data(), g.in.size());
        const size_t ab = g.aug.size() * sizeof(kernels::AugmentParams);
        Tensor aug = empty({static_cast<int64_t>(ab)}, DType::u8);
        std::memcpy(aug.data<uint8_t>(), g.aug.data(), ab);
        d.push_back({in.to(dev), aug.to(dev), empty({g.p.B}, DType::f32, dev),
                     empty({static_cast<int64_t>(g.in.size())}, dt, dev)});
    }
    const auto run = [&] {
        for (size_t i = 0; i < groups.size(); ++i)
            kernels::cuda::augment_fwd(groups[i].p, d[i].in.data<uint8_t>(),
                                       reinterpret_cast<const kernels::AugmentParams*>(d[i].aug.data<uint8_t>()),
                                       d[i].ws.data<float>(), d[i].out.data<T>(), runtime::stream(dev));
    };
    const double t = bench::time_median(run, dev, 3, repeats);
    size_t bytes = 0;
    for (const Group& g : groups) bytes += g.in.size() * (1 + dtype_size(dt));
    std::printf("%-26s %-14s %-5s batch %4d: %9.1f us  %10.0f samples/s %10.0f images/s %8.1f GB/s\n", name,
                recipe_label(r).c_str(), dtype_name(dt), samples, t * 1e6, samples / t, samples * r.num_views() / t,
                bytes / t / 1e9);
}
#endif

}  // namespace

int main(int argc, char** argv) {
    int samples = 8, repeats = 5;
    bool gpu = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--samples" && i + 1 < argc) samples = std::atoi(argv[++i]);
        else if (a == "--repeats" && i + 1 < argc) repeats = std::atoi(argv[++i]);
        else if (a == "--no-gpu") gpu = false;
        else {
            std::fprintf(stderr, "usage: %s [--samples N] [--repeats N] [--no-gpu]\n", argv[0]);
            return 2;
        }
    }
    const data::ViewRecipe cnn = data::make_recipe(data::Method::dino, data::Arch::cnn, true);
    const data::ViewRecipe vit = data::make_recipe(data::Method::dino, data::Arch::vit, false);
    std::printf("photometric augmentation, CPU, one core, %d samples per repeat (views drawn from the recipe)\n",
                samples);
    std::printf("%-26s %-14s %10s %10s %10s %12s %10s %8s\n", "recipe", "views", "us/sample", "samples/s",
                "images/s", "naive us/smp", "naive s/s", "ratio");
    bench_cpu("DINO SSLight CNN", cnn, samples, repeats);
    bench_cpu("DINO baseline ViT", vit, samples, repeats);
    std::printf("(ratio = naive per-op time / kernel time: > 1 means the kernel is faster)\n");
#ifdef SSLIGHT_WITH_CUDA
    if (gpu && runtime::cuda_device_count() > 0) {
        std::printf("\nphotometric augmentation, GPU, batch of 128 samples per resolution group\n");
        bench_gpu<float>("DINO SSLight CNN", cnn, 128, 20);
        bench_gpu<bf16>("DINO SSLight CNN", cnn, 128, 20);
        bench_gpu<bf16>("DINO baseline ViT", vit, 128, 20);
    } else if (gpu) {
        std::printf("\nGPU part skipped: %s\n", runtime::cuda_unavailable_reason().c_str());
    }
#else
    (void)gpu;
#endif
    return 0;
}
