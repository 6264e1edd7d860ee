// Decode + multi-crop throughput of the loader's CPU half (samples/s): per sample one decode at the DCT scale
// the largest crop needs (region decoding when the crops cover little of the picture), then every view's
// RandomResizedCrop box, PIL-exact bicubic resampling and a random flip, for the SSLight CNN recipe
// (2x224 + 6x128) and the ViT recipe (2x224 + 10x96), at 1, 2 and all threads, on the opencv-doc photographs;
// beside PIL + torchvision doing the same on one core (bench/bench_decode_pil.py), with the ratio per core.
// usage: bench_decode [--seconds S] [--images DIR]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "data/crop.h"
#include "data/decode.h"
#include "tests/data/test_images.h"

using namespace sslight;
using namespace sslight::data;

namespace {

struct Recipe {
    const char* name;
    int n_global, global_size;
    double g_lo, g_hi;
    int n_local, local_size;
    double l_lo, l_hi;
};

struct Mode {
    const char* name;
    bool dct_scaling;
    double region_max_fraction;
};

// One worker's reusable state: its decoder, the crop plan and the output crops.
struct Worker {
    explicit Worker(const Mode& m) : dec(options(m)) {}
    static DecodeOptions options(const Mode& m) {
        DecodeOptions o;
        o.dct_scaling = m.dct_scaling;
        o.region_max_fraction = m.region_max_fraction;
        return o;
    }
    Decoder dec;
    CropSource src;
    std::vector<CropRequest> plan;
    std::vector<std::vector<uint8_t>> out;
};

void run_sample(Worker& w, const Recipe& r, const std::vector<uint8_t>& bytes, int64_t sample) {
    const ImageInfo info = w.dec.probe(bytes.data(), bytes.size());
    const int views = r.n_global + r.n_local;
    w.plan.resize(size_t(views));
    w.out.resize(size_t(views));
    std::vector<bool> flip(static_cast<size_t>(views), false);
    for (int v = 0; v < views; ++v) {
        const bool global = v < r.n_global;
        const int size = global ? r.global_size : r.local_size;
        Rng rng = Rng::for_view(1234, 0, sample, v);
        const CropBox box = random_resized_crop_box(info.width, info.height, global ? r.g_lo : r.l_lo,
                                                    global ? r.g_hi : r.l_hi, 3.0 / 4, 4.0 / 3, rng);
        w.plan[size_t(v)] = CropRequest{box, size, size};
        flip[size_t(v)] = rng.bernoulli(0.5);
    }
    w.dec.decode_for_crops(bytes.data(), bytes.size(), w.plan, w.src);
    for (int v = 0; v < views; ++v) {
        const int size = w.plan[size_t(v)].out_w;
        std::vector<uint8_t>& o = w.out[size_t(v)];
        o.resize(size_t(size) * size * 3);
        resize_bicubic_aa(w.src.image.rgb.data(), w.src.image.width, w.src.image.height, w.src.image.stride(),
                          w.src.boxes[size_t(v)], o.data(), size, size);
        if (flip[size_t(v)]) hflip(o.data(), size, size, size * 3);
    }
}

double thread_cpu_seconds() {
    timespec t;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

struct Rate {
    double wall = 0;  // samples per second of wall-clock time
    double cpu = 0;   // samples per CPU-second of the workers (per core, whatever else runs on the machine)
};

// `threads` workers sharing a sample counter for about `seconds`.
Rate measure(const Recipe& r, const Mode& m, int threads, const std::vector<std::vector<uint8_t>>& files,
             double seconds) {
    std::atomic<int64_t> next{0};
    std::atomic<bool> stop{false};
    std::vector<double> cpu(size_t(threads), 0.0);
    std::vector<std::thread> pool;
    {
        Worker warm(m);
        for (size_t i = 0; i < files.size(); ++i) run_sample(warm, r, files[i], int64_t(i));
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            Worker w(m);
            const double c0 = thread_cpu_seconds();
            while (!stop.load(std::memory_order_relaxed)) {
                const int64_t i = next.fetch_add(1);
                run_sample(w, r, files[size_t(i) % files.size()], i);
            }
            cpu[size_t(t)] = thread_cpu_seconds() - c0;
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (std::thread& t : pool) t.join();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu_total = 0;
    for (double c : cpu) cpu_total += c;
    return {double(next.load()) / dt, double(next.load()) / cpu_total};
}

Rate measure_pil(const Recipe& r, const std::vector<std::string>& paths, double seconds) {
    char args[256];
    std::snprintf(args, sizeof(args), " %d %d %g %g %d %d %g %g %g", r.n_global, r.global_size, r.g_lo, r.g_hi,
                  r.n_local, r.local_size, r.l_lo, r.l_hi, seconds);
    std::string cmd = "/usr/bin/python3 " SSLIGHT_SOURCE_DIR "/bench/bench_decode_pil.py" + std::string(args);
    for (const std::string& p : paths) cmd += " '" + p + "'";
    FILE* f = ::popen((cmd + " 2>/dev/null").c_str(), "r");
    Rate rate;
    if (f) {
        if (std::fscanf(f, "samples_per_s %lf %lf", &rate.wall, &rate.cpu) != 2) rate = Rate{};
        ::pclose(f);
    }
    return rate;
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 3.0;
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--seconds") == 0)
            seconds = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--images") == 0)
            ::setenv("SSLIGHT_TEST_IMAGES", argv[++i], 1);
    }
    if (!std::getenv("SSLIGHT_TEST_IMAGES"))
        ::setenv("SSLIGHT_TEST_IMAGES", SSLIGHT_BINARY_DIR "/tests/test_images", 1);
    const test::TestImages& images = test::test_images();
    if (!images.photos) {
        std::printf("bench_decode: no test photographs (%s)\n", images.photo_status.c_str());
        return 1;
    }
    std::vector<std::string> paths;
    std::vector<std::vector<uint8_t>> files;
    int64_t pixels = 0;
    for (const char* n : {"baboon.jpg", "fruits.jpg", "building.jpg", "board.jpg", "aero1.jpg", "leuvenA.jpg",
                          "messi5.jpg", "home.jpg", "orange.jpg", "starry_night.jpg", "aloeL.jpg", "butterfly.jpg"}) {
        paths.push_back(images.photo(n));
        files.push_back(read_file_bytes(paths.back()));
        Decoder d;
        const ImageInfo info = d.probe(files.back().data(), files.back().size());
        pixels += int64_t(info.width) * info.height;
    }
    std::printf("decode + multi-crop on %zu opencv-doc JPEGs (mean %.0f kpixels), %.1f s per measurement\n",
                files.size(), double(pixels) / files.size() / 1000, seconds);
    const Recipe recipes[] = {{"CNN 2x224+6x128", 2, 224, 0.3, 1.0, 6, 128, 0.05, 0.3},
                              {"ViT 2x224+10x96", 2, 224, 0.25, 1.0, 10, 96, 0.05, 0.25}};
    const Mode modes[] = {{"dct+region", true, 0.5}, {"dct only", true, 0.0}, {"full decode", false, 0.0}};
    const int all = int(std::max(2u, std::thread::hardware_concurrency()));
    std::printf("\n%-17s %-12s %7s %11s %13s %15s %10s\n", "recipe", "mode", "threads", "samples/s", "per CPU-s",
                "PIL per CPU-s", "ratio/core");
    for (const Recipe& r : recipes) {
        const Rate pil = measure_pil(r, paths, seconds);
        std::printf("%-17s %-12s %7d %11.1f %13.1f %15s %10s\n", r.name, "PIL+tv", 1, pil.wall, pil.cpu, "", "");
        for (const Mode& m : modes) {
            std::vector<int> counts = {1};
            if (&m == &modes[0]) counts = all > 2 ? std::vector<int>{1, 2, all} : std::vector<int>{1, 2};
            for (int t : counts) {
                const Rate rate = measure(r, m, t, files, seconds);
                std::printf("%-17s %-12s %7d %11.1f %13.1f %15.1f %9.2fx\n", r.name, m.name, t, rate.wall, rate.cpu,
                            pil.cpu, pil.cpu > 0 ? rate.cpu / pil.cpu : 0.0);
            }
        }
    }
    std::printf(
        "(PIL+tv: Image.open + convert + torchvision RandomResizedCrop(BICUBIC) + flip per view, one process.\n"
        " per CPU-s = samples per CPU-second actually used (per core, robust to other load on the machine);\n"
        " ratio/core = sslight per CPU-s / PIL per CPU-s. samples/s is wall-clock and needs free cores.)\n");
    return 0;
}
