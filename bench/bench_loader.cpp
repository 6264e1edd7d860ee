// Throughput of the whole multi-crop loader (data/loader.h: index, sampler, worker threads, decode at the DCT
// scale the crops need, PIL-exact bicubic crops into batch buffers, bounded queue) in samples/s for the SSLight
// CNN recipe (2x224 + 6x128) and the ViT baseline recipe (2x224 + 10x96), at 1, 2 and all threads, on an
// ImageFolder of the opencv-doc photographs; beside torchvision's DataLoader + PIL doing the same
// (bench/bench_loader_torchvision.py, num_workers 0/1/2). Photometric ops excluded on both sides.
// usage: bench_loader [--seconds S] [--images DIR] [--batch B] [--copies K]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "data/loader.h"
#include "tests/data/test_images.h"

using namespace sslight;
using namespace sslight::data;

namespace {

struct Rate {
    double wall = 0;  // samples per second of wall-clock time
    double cpu = 0;   // samples per CPU-second of the whole process (per core, robust to other load)
};

double process_cpu_seconds() {
    timespec t;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// K copies of every photograph, one class folder per copy, under a fresh temporary root.
std::string make_folder(const std::vector<std::string>& photos, int copies) {
    std::string root = "/tmp/sslight_bench_loader_" + std::to_string(::getpid()) + "_XXXXXX";
    if (!::mkdtemp(&root[0])) return "";
    for (int k = 0; k < copies; ++k) {
        const std::string dir = root + "/class_" + std::to_string(k);
        ::mkdir(dir.c_str(), 0755);
        for (const std::string& p : photos) {
            std::ifstream in(p, std::ios::binary);
            std::ofstream out(dir + p.substr(p.rfind('/')), std::ios::binary);
            out << in.rdbuf();
        }
    }
    return root;
}

Rate measure_loader(const Dataset& ds, const ViewRecipe& r, int threads, int batch, double seconds) {
    LoaderOptions o;
    o.batch_size = batch, o.num_threads = threads, o.seed = 1234;
    MultiCropLoader loader(ds, r, o);
    MultiCropBatch b;
    loader.start_epoch(0);
    while (loader.next(b)) {
    }
    int64_t done = 0, epoch = 1;
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = process_cpu_seconds();
    double dt = 0;
    while (dt < seconds) {
        loader.start_epoch(epoch++);
        while (dt < seconds && loader.next(b)) {
            done += b.batch_size();
            dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
    }
    const double cpu = process_cpu_seconds() - c0;
    return {double(done) / dt, double(done) / cpu};
}

Rate measure_torchvision(const ViewRecipe& r, const std::string& list, int workers, int batch, double seconds) {
    const ViewSpec &g = r.globals[0], &l = r.locals[0];
    char args[512];
    std::snprintf(args, sizeof(args), " %d %d %g %g %d %d %g %g %g %d %d '%s'", int(r.globals.size()), g.size,
                  g.scale_lo, g.scale_hi, int(r.locals.size()), l.size, l.scale_lo, l.scale_hi, seconds, batch,
                  workers, list.c_str());
    const std::string cmd = "/usr/bin/python3 " SSLIGHT_SOURCE_DIR "/bench/bench_loader_torchvision.py" +
                            std::string(args) + " 2>/dev/null";
    Rate rate;
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
        if (std::fscanf(f, "samples_per_s %lf %lf", &rate.wall, &rate.cpu) != 2) rate = Rate{};
        ::pclose(f);
    }
    return rate;
}

std::string recipe_name(const ViewRecipe& r) {
    return std::to_string(r.globals.size()) + "x" + std::to_string(r.globals[0].size) + "+" +
           std::to_string(r.locals.size()) + "x" + std::to_string(r.locals[0].size);
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 3.0;
    int batch = 16, copies = 8;
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--images") == 0) ::setenv("SSLIGHT_TEST_IMAGES", argv[++i], 1);
        else if (std::strcmp(argv[i], "--batch") == 0) batch = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--copies") == 0) copies = std::atoi(argv[++i]);
    }
    if (!std::getenv("SSLIGHT_TEST_IMAGES"))
        ::setenv("SSLIGHT_TEST_IMAGES", SSLIGHT_BINARY_DIR "/tests/test_images", 1);
    const test::TestImages& images = test::test_images();
    if (!images.photos) {
        std::printf("bench_loader: no test photographs (%s)\n", images.photo_status.c_str());
        return 1;
    }
    std::vector<std::string> photos;
    for (const char* n : {"baboon.jpg", "fruits.jpg", "building.jpg", "board.jpg", "aero1.jpg", "leuvenA.jpg",
                          "messi5.jpg", "home.jpg", "orange.jpg", "starry_night.jpg", "aloeL.jpg", "butterfly.jpg"})
        photos.push_back(images.photo(n));
    const std::string root = make_folder(photos, copies);
    const Dataset ds = Dataset::image_folder(root, IndexOptions{"", false});
    const std::string list = root + "/list.txt";
    {
        std::ofstream out(list);
        for (int64_t i = 0; i < ds.size(); ++i) out << ds.path(i) << " " << ds.label(i) << "\n";
    }
    const int all = int(std::max(2u, std::thread::hardware_concurrency()));
    std::printf("multi-crop loader on %lld opencv-doc JPEGs (%zu photographs x %d), batch %d, %.1f s per run\n",
                static_cast<long long>(ds.size()), photos.size(), copies, batch, seconds);
    std::printf("\n%-15s %-22s %8s %11s %11s %10s\n", "recipe", "loader", "threads", "samples/s", "per CPU-s",
                "ratio/core");
    const ViewRecipe recipes[] = {make_recipe(Method::dino, Arch::cnn, true),
                                  make_recipe(Method::dino, Arch::vit, false)};
    for (const ViewRecipe& r : recipes) {
        const std::string name = recipe_name(r);
        double tv_best = 0;
        for (int w : {0, 1, 2}) {
            const Rate tv = measure_torchvision(r, list, w, batch, seconds);
            tv_best = std::max(tv_best, tv.cpu);
            std::printf("%-15s %-22s %8d %11.1f %11.1f %10s\n", name.c_str(), "torchvision num_workers", w, tv.wall,
                        tv.cpu, "");
        }
        std::vector<int> counts = all > 2 ? std::vector<int>{1, 2, all} : std::vector<int>{1, 2};
        for (int t : counts) {
            const Rate s = measure_loader(ds, r, t, batch, seconds);
            std::printf("%-15s %-22s %8d %11.1f %11.1f %9.2fx\n", name.c_str(), "sslight MultiCropLoader", t, s.wall,
                        s.cpu, tv_best > 0 ? s.cpu / tv_best : 0.0);
        }
    }
    std::printf("(per CPU-s = samples per CPU-second of the process and its workers; ratio/core = sslight per\n"
                " CPU-s / the best torchvision per CPU-s. torchvision flips in PIL; sslight defers the flip to the\n"
                " photometric kernel. samples/s is wall-clock and needs free cores.)\n");
    std::system(("rm -rf '" + root + "'").c_str());
    return 0;
}
