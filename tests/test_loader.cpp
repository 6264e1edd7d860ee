// The threaded multi-crop loader (data/loader.h) on small generated ImageFolders: batch shapes and dtypes for
// CNN-like (2 globals + 4 locals) and ViT-like (2 + 10) recipes, crops equal to decoding the sample by hand,
// bit-identical batches for 1 and 3 threads, per-epoch change, disjoint rank shards, bad files skipped and
// reported with their path, failure when most files are bad or the data set is missing, clean shutdown
// mid-epoch, the bounded buffer count, and augment_group against the kernel. No gradients involved.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "data/loader.h"

using namespace sslight;
using namespace sslight::data;

namespace {

std::vector<uint8_t> jpeg_of(int w, int h, int seed) {
    std::vector<uint8_t> px(size_t(w) * h * 3);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c)
                px[(size_t(y) * w + x) * 3 + c] = uint8_t(
                    127.5 + 110 * std::sin(0.07 * x * (c + 1) + 0.05 * y + seed) * std::cos(0.03 * y * (3 - c) - seed));
    tjhandle tj = tjInitCompress();
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    REQUIRE(tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0) == 0);
    std::vector<uint8_t> out(buf, buf + size);
    tjFree(buf);
    tjDestroy(tj);
    return out;
}

void write_file(const std::string& path, const std::vector<uint8_t>& b) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

struct TempRoots {  // the generated data sets, removed at exit
    std::vector<std::string> dirs;
    ~TempRoots() {
        std::error_code ec;
        for (const std::string& d : dirs) std::filesystem::remove_all(d, ec);
    }
} g_temp_roots;

std::string temp_root(const char* tag) {
    std::string t = "/tmp/sslight_loader_" + std::string(tag) + "_" + std::to_string(::getpid()) + "_XXXXXX";
    REQUIRE(::mkdtemp(&t[0]) != nullptr);
    g_temp_roots.dirs.push_back(t);
    return t;
}

// root/<class>/img_i.jpg with `good` images of varied (odd) sizes over 3 classes, plus the given bad files.
std::string make_folder(const char* tag, int good, const std::vector<std::pair<std::string, std::vector<uint8_t>>>&
                                                       bad = {}) {
    const std::string root = temp_root(tag);
    const char* classes[] = {"ant", "bee", "cat"};
    for (const char* c : classes) ::mkdir((root + "/" + c).c_str(), 0755);
    for (int i = 0; i < good; ++i) {
        const int w = 70 + 37 * (i % 5), h = 61 + 29 * ((i * 3) % 4);
        write_file(root + "/" + classes[i % 3] + "/img_" + std::to_string(100 + i) + ".jpg", jpeg_of(w, h, i));
    }
    for (const auto& [name, bytes] : bad) write_file(root + "/" + classes[0] + "/" + name, bytes);
    return root;
}

IndexOptions no_cache() { return IndexOptions{"", false}; }

// DINO SSLight CNN geometry at test sizes: 2 x 64 + 4 x 32 (or the ViT one: 2 x 48 + 10 x 24).
ViewRecipe small_recipe(Arch a) {
    ViewRecipe r = make_recipe(Method::dino, a, true);
    for (ViewSpec& v : r.globals) v.size = a == Arch::cnn ? 64 : 48;
    if (a == Arch::cnn) r.locals.resize(4);
    for (ViewSpec& v : r.locals) v.size = a == Arch::cnn ? 32 : 24;
    return r;
}

LoaderOptions opts_of(int batch, int threads, uint64_t seed = 7) {
    LoaderOptions o;
    o.batch_size = batch, o.num_threads = threads, o.seed = seed;
    return o;
}

struct Copy {  // a deep copy of a batch
    std::vector<std::vector<uint8_t>> groups;
    std::vector<std::vector<AugmentParams>> params;
    std::vector<int64_t> labels, indices;
};

Copy copy_of(const MultiCropBatch& b) {
    Copy c;
    for (const Tensor& g : b.groups) c.groups.push_back(g.to_vector<uint8_t>());
    c.params = b.params;
    c.labels = b.labels.to_vector<int64_t>();
    c.indices = b.indices;
    return c;
}

bool same(const Copy& a, const Copy& b) {
    if (a.groups != b.groups || a.labels != b.labels || a.indices != b.indices) return false;
    for (size_t g = 0; g < a.params.size(); ++g)
        if (a.params[g].size() != b.params[g].size() ||
            std::memcmp(a.params[g].data(), b.params[g].data(), a.params[g].size() * sizeof(AugmentParams)) != 0)
            return false;
    return true;
}

std::vector<Copy> epoch_of(MultiCropLoader& l, int64_t epoch) {
    l.start_epoch(epoch);
    std::vector<Copy> out;
    MultiCropBatch b;
    while (l.next(b)) out.push_back(copy_of(b));
    return out;
}

// Runs f with stderr sent to a file; returns what it wrote.
template <class F>
std::string capture_stderr(F&& f) {
    const std::string path = "/tmp/sslight_loader_stderr_" + std::to_string(::getpid());
    std::fflush(stderr);
    const int saved = ::dup(2);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
    try {
        f();
    } catch (...) {
        std::fflush(stderr);
        ::dup2(saved, 2);
        ::close(saved);
        throw;
    }
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::remove(path.c_str());
    return ss.str();
}

// Runs f on a thread and fails (ending the process) when it does not finish within `seconds`.
template <class F>
void within(double seconds, F&& f) {
    std::atomic<bool> done{false};
    std::thread t([&] {
        f();
        done = true;
    });
    const auto t0 = std::chrono::steady_clock::now();
    while (!done && std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!done) {
        std::fprintf(stderr, "test_loader: hang (did not finish within %.0f s)\n", seconds);
        std::_Exit(1);
    }
    t.join();
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("loader: batch shapes, dtypes, labels for the CNN (2x64 + 4x32) and ViT (2x48 + 10x24) recipes") {
        const std::string root = make_folder("shapes", 14);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        for (Arch a : {Arch::cnn, Arch::vit}) {
            const ViewRecipe r = small_recipe(a);
            const int B = 5, G = 2, L = static_cast<int>(r.locals.size()), S = r.globals[0].size;
            const int s = r.locals[0].size;
            MultiCropLoader loader(ds, r, opts_of(B, 2));
            CHECK(loader.batches_per_epoch() == 2);  // 14 / 5 with drop_last
            REQUIRE(loader.groups().size() == 2);
            MultiCropBatch b;
            REQUIRE(loader.next(b));
            REQUIRE(b.groups.size() == 2);
            CHECK(b.groups[0].shape() == Shape{G * B, S, S, 3});
            CHECK(b.groups[1].shape() == Shape{L * B, s, s, 3});
            CHECK(b.groups[0].dtype() == DType::u8);
            CHECK(b.labels.dtype() == DType::i64);
            CHECK(b.labels.shape() == Shape{B});
            CHECK(b.params[0].size() == size_t(G * B));
            CHECK(b.params[1].size() == size_t(L * B));
            CHECK(b.step == 0);
            const std::vector<int64_t> labels = b.labels.to_vector<int64_t>();
            for (int i = 0; i < B; ++i) CHECK(labels[size_t(i)] == ds.label(b.indices[size_t(i)]));
            const std::vector<uint8_t> px = b.groups[1].to_vector<uint8_t>();
            CHECK(*std::max_element(px.begin(), px.end()) > 150);
            CHECK(*std::min_element(px.begin(), px.end()) < 100);
            REQUIRE(loader.next(b));
            CHECK(b.step == 1);
            CHECK_FALSE(loader.next(b));
            CHECK(loader.stats().samples == 2 * B);
        }
    }

    TEST_CASE("loader: every crop equals decoding and resampling its sample by hand (view-major rows)") {
        const std::string root = make_folder("hand", 7);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        const uint64_t seed = 99;
        MultiCropLoader loader(ds, r, opts_of(3, 2, seed));
        loader.start_epoch(4);
        MultiCropBatch b;
        REQUIRE(loader.next(b));
        Decoder dec;
        const std::vector<ViewGroup> groups = view_groups(r);
        for (int i = 0; i < 3; ++i) {
            const int64_t idx = b.indices[size_t(i)];
            const std::vector<uint8_t> bytes = read_file_bytes(ds.path(idx));
            const ImageInfo info = dec.probe(bytes.data(), bytes.size());
            std::vector<CropRequest> reqs;
            for (int v = 0; v < r.num_views(); ++v) {
                Rng rng = Rng::for_view(seed, 4, idx, v);
                const ViewSpec& s = r.view(v);
                reqs.push_back({random_resized_crop_box(info.width, info.height, s.scale_lo, s.scale_hi, s.ratio_lo,
                                                        s.ratio_hi, rng), s.size, s.size});
            }
            const CropSource src = dec.decode_for_crops(bytes.data(), bytes.size(), reqs);
            for (size_t g = 0; g < groups.size(); ++g)
                for (size_t vi = 0; vi < groups[g].views.size(); ++vi) {
                    const int v = groups[g].views[vi], S = groups[g].size;
                    std::vector<uint8_t> want(size_t(S) * S * 3);
                    resize_bicubic_aa(src.image.rgb.data(), src.image.width, src.image.height, src.image.stride(),
                                      src.boxes[size_t(v)], want.data(), S, S);
                    const int64_t row = int64_t(vi) * 3 + i;
                    const uint8_t* got = b.groups[g].data<uint8_t>() + row * S * S * 3;
                    CHECK(std::memcmp(got, want.data(), want.size()) == 0);
                    const AugmentParams p = draw_augment(r.view(v), seed, 4, idx, v);
                    CHECK(std::memcmp(&p, &b.params[g][size_t(row)], sizeof(p)) == 0);
                }
        }
    }

    TEST_CASE("loader: 1 and 3 threads give bit-identical batches; epochs differ; restarting an epoch repeats it") {
        const std::string root = make_folder("determinism", 17);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        LoaderOptions o1 = opts_of(4, 1), o3 = opts_of(4, 3);
        o3.prefetch_batches = 3;
        MultiCropLoader l1(ds, r, o1), l3(ds, r, o3);
        const std::vector<Copy> a = epoch_of(l1, 2), b = epoch_of(l3, 2);
        REQUIRE(a.size() == 4);
        REQUIRE(b.size() == 4);
        for (size_t k = 0; k < a.size(); ++k) CHECK(same(a[k], b[k]));
        const std::vector<Copy> c = epoch_of(l3, 3);
        CHECK_FALSE(same(a[0], c[0]));
        std::set<int64_t> seen;
        for (const Copy& x : a) seen.insert(x.indices.begin(), x.indices.end());
        CHECK(seen.size() == 16);  // 17 samples, drop_last: 16 distinct ones
        int compared = 0, differ = 0;  // a sample in both epochs: its first global crop changes with the epoch
        for (const Copy& x : a)
            for (const Copy& y : c)
                for (size_t i = 0; i < 4; ++i)
                    for (size_t j = 0; j < 4; ++j)
                        if (x.indices[i] == y.indices[j]) {
                            const size_t n = 64 * 64 * 3;
                            ++compared;
                            differ += std::memcmp(&x.groups[0][i * n], &y.groups[0][j * n], n) != 0;
                        }
        CHECK(compared >= 10);
        CHECK(differ == compared);
        MultiCropBatch half;
        l1.start_epoch(3);
        REQUIRE(l1.next(half));  // abandon epoch 3 after one batch, then run it again
        const std::vector<Copy> d = epoch_of(l1, 3);
        REQUIRE(d.size() == c.size());
        for (size_t k = 0; k < c.size(); ++k) CHECK(same(c[k], d[k]));
    }

    TEST_CASE("loader: two ranks see disjoint samples; drop_last false keeps the last partial batch") {
        const std::string root = make_folder("shard", 13);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        std::set<int64_t> all;
        int64_t count = 0;
        for (int rank = 0; rank < 2; ++rank) {
            LoaderOptions o = opts_of(3, 2);
            o.rank = rank, o.world = 2;
            MultiCropLoader l(ds, r, o);
            for (const Copy& c : epoch_of(l, 1)) {
                all.insert(c.indices.begin(), c.indices.end());
                count += int64_t(c.indices.size());
            }
        }
        CHECK(count == 12);  // 6 per rank, 2 batches of 3 each
        CHECK(all.size() == 12);
        LoaderOptions o = opts_of(5, 2);
        o.drop_last = false;
        MultiCropLoader l(ds, r, o);
        CHECK(l.batches_per_epoch() == 3);
        const std::vector<Copy> e = epoch_of(l, 0);
        REQUIRE(e.size() == 3);
        CHECK(e[2].indices.size() == 3);
        CHECK(e[2].groups[1].size() == size_t(3 * 4 * 32 * 32 * 3));
    }
}

namespace {

// A JPEG whose SOF header declares 65535 x 65535 pixels.
std::vector<uint8_t> absurd_header_jpeg() {
    std::vector<uint8_t> j = jpeg_of(40, 30, 3);
    for (size_t i = 0; i + 9 < j.size(); ++i)
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            j[i + 5] = j[i + 6] = j[i + 7] = j[i + 8] = 0xFF;
            return j;
        }
    FAIL("no SOF0 marker");
    return j;
}

std::vector<std::pair<std::string, std::vector<uint8_t>>> bad_files() {
    const std::vector<uint8_t> jpg = jpeg_of(90, 70, 5);
    const std::string text = "this is not an image at all, only some text pretending to be one";
    return {{"zero.jpg", {}},
            {"garbage.jpg", std::vector<uint8_t>(text.begin(), text.end())},
            {"truncated.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + 100)},
            {"absurd.jpg", absurd_header_jpeg()}};
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("loader: corrupt, truncated, zero-byte and absurd files are skipped, replaced, counted, reported") {
        const std::string root = make_folder("bad", 12, bad_files());
        const Dataset ds = Dataset::image_folder(root, no_cache());
        REQUIRE(ds.size() == 16);
        const ViewRecipe r = small_recipe(Arch::cnn);
        std::vector<Copy> runs[2];
        LoaderStats stats;
        const std::string err = capture_stderr([&] {
            for (int t : {1, 3}) {
                MultiCropLoader l(ds, r, opts_of(16, t));
                runs[t == 3] = epoch_of(l, 0);
                MultiCropBatch b;
                CHECK_FALSE(l.next(b));  // the epoch summary is printed once
                stats = l.stats();
            }
        });
        REQUIRE(runs[0].size() == 1);
        CHECK(same(runs[0][0], runs[1][0]));
        const Copy& c = runs[0][0];
        CHECK(c.indices.size() == 16);
        CHECK(c.labels.size() == 16);
        CHECK(stats.bad_files >= 4);
        for (int64_t idx : c.indices) CHECK(ds.path(idx).find("img_") != std::string::npos);
        for (const auto& [name, bytes] : bad_files())
            CHECK_MESSAGE(err.find(root + "/ant/" + name) != std::string::npos, name);
        CHECK(err.find("bad files skipped and replaced") != std::string::npos);
    }

    TEST_CASE("loader: a data set of mostly bad files stops with a clear error; missing or empty sets fail at start") {
        std::vector<std::pair<std::string, std::vector<uint8_t>>> bad;
        for (int i = 0; i < 9; ++i) bad.push_back({"empty_" + std::to_string(i) + ".jpg", {}});
        const std::string root = make_folder("mostly_bad", 3, bad);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        LoaderOptions o = opts_of(12, 2);
        o.max_bad_reports = 2;
        std::string what;
        const std::string err = capture_stderr([&] {
            MultiCropLoader l(ds, r, o);
            MultiCropBatch b;
            try {
                l.next(b);
            } catch (const IoError& e) {
                what = e.what();
            }
        });
        CHECK(what.find("are bad") != std::string::npos);
        CHECK(what.find("empty_") != std::string::npos);
        size_t reports = 0;
        for (size_t p = err.find("skipping bad file"); p != std::string::npos; p = err.find("skipping bad file", p + 1))
            ++reports;
        CHECK(reports == 2);  // max_bad_reports

        CHECK_THROWS_AS(Dataset::image_folder(root + "/no_such_dir", no_cache()), IoError);
        CHECK_THROWS_AS(Dataset::list_file(root + "/no_such_list.txt"), IoError);
        write_file(root + "/empty_list.txt", {});
        CHECK_THROWS_AS(
            [&] {
                const Dataset d = Dataset::list_file(root + "/empty_list.txt");
                MultiCropLoader l(d, r, o);
            }(),
            IoError);
        CHECK_THROWS_AS(MultiCropLoader(ds, r, opts_of(13, 1)), ConfigError);  // 12 files: no full batch of 13
        CHECK_THROWS_AS(MultiCropLoader(ds, r, opts_of(0, 1)), ConfigError);
    }

    TEST_CASE("loader: a list file naming a missing file: skipped like a bad file") {
        const std::string root = make_folder("list", 6);
        const Dataset folder = Dataset::image_folder(root, no_cache());
        std::ofstream list(root + "/list.txt");
        for (int64_t i = 0; i < folder.size(); ++i) list << folder.path(i) << " " << folder.label(i) << "\n";
        list << root << "/ant/vanished.jpg 0\n";
        list.close();
        const Dataset ds = Dataset::list_file(root + "/list.txt");
        REQUIRE(ds.size() == 7);
        MultiCropLoader l(ds, small_recipe(Arch::cnn), opts_of(7, 2));
        std::vector<Copy> e;
        const std::string err = capture_stderr([&] { e = epoch_of(l, 0); });
        REQUIRE(e.size() == 1);
        CHECK(e[0].indices.size() == 7);
        CHECK(l.stats().bad_files >= 1);
        CHECK(err.find("vanished.jpg") != std::string::npos);
    }

    TEST_CASE("loader: destroying it mid-epoch, before any batch or while workers wait, does not hang") {
        const std::string root = make_folder("shutdown", 12);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        within(30, [&] {
            for (int prefetch : {1, 2}) {
                LoaderOptions o = opts_of(2, 3);
                o.prefetch_batches = prefetch;
                { MultiCropLoader idle(ds, r, o); }
                {
                    MultiCropLoader started(ds, r, o);
                    started.start_epoch(0);
                }
                MultiCropLoader l(ds, r, o);
                MultiCropBatch b;
                REQUIRE(l.next(b));
                std::this_thread::sleep_for(std::chrono::milliseconds(20));  // workers blocked on a full queue
            }
        });
    }

    TEST_CASE("loader: buffers are reused (at most prefetch + 1); batches the caller keeps are never overwritten") {
        const std::string root = make_folder("buffers", 12);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        LoaderOptions o = opts_of(2, 3);
        o.prefetch_batches = 2;
        MultiCropLoader l(ds, r, o);
        for (int64_t e = 0; e < 2; ++e) {
            l.start_epoch(e);
            MultiCropBatch b;
            while (l.next(b)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        CHECK(l.stats().batches == 12);
        CHECK(l.stats().buffers <= 3);
        CHECK(l.stats().buffers >= 2);
        l.start_epoch(5);
        std::vector<MultiCropBatch> kept(6);
        std::vector<Copy> copies;
        for (MultiCropBatch& b : kept) {
            REQUIRE(l.next(b));
            copies.push_back(copy_of(b));
        }
        for (size_t k = 0; k < kept.size(); ++k) CHECK(same(copy_of(kept[k]), copies[k]));
        CHECK(l.stats().decode_seconds > 0);
        CHECK(l.stats().crop_seconds > 0);
    }

    TEST_CASE("loader: augment_group on the CPU equals the photometric kernel called directly") {
        const std::string root = make_folder("augment", 9);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::vit);
        MultiCropLoader l(ds, r, opts_of(3, 2));
        MultiCropBatch b;
        REQUIRE(l.next(b));
        for (size_t g = 0; g < b.groups.size(); ++g) {
            const Tensor& u8 = b.groups[g];
            kernels::AugmentBatch p;
            p.B = int(u8.size(0)), p.H = int(u8.size(1)), p.W = int(u8.size(2));
            std::vector<float> want(size_t(u8.numel()));
            kernels::augment_fwd_cpu<float>(p, u8.data<uint8_t>(), b.params[g].data(), want.data());
            const Tensor got = augment_group(u8, b.params[g], Device::cpu(), DType::f32);
            CHECK(got.shape() == u8.shape());
            CHECK(got.to_vector<float>() == want);
            const Tensor half = augment_group(u8, b.params[g], Device::cpu(), DType::bf16);
            CHECK(half.dtype() == DType::bf16);
            const std::vector<float> hv = half.to(DType::f32).to_vector<float>();
            for (size_t i = 0; i < hv.size(); i += 97) CHECK(hv[i] == doctest::Approx(want[i]).epsilon(0.01));
        }
        std::vector<AugmentParams> short_params(b.params[0].begin(), b.params[0].end() - 1);
        CHECK_THROWS_AS(augment_group(b.groups[0], short_params, Device::cpu()), ShapeError);
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("loader: pinned buffers give the same batches; augment_group on the GPU matches the CPU") {
        const std::string root = make_folder("gpu", 10);
        const Dataset ds = Dataset::image_folder(root, no_cache());
        const ViewRecipe r = small_recipe(Arch::cnn);
        LoaderOptions pinned = opts_of(4, 2);
        pinned.pinned = true;
        MultiCropLoader lp(ds, r, pinned), lu(ds, r, opts_of(4, 2));
        const std::vector<Copy> a = epoch_of(lp, 1), b = epoch_of(lu, 1);
        REQUIRE(a.size() == b.size());
        for (size_t k = 0; k < a.size(); ++k) CHECK(same(a[k], b[k]));
        lp.start_epoch(2);
        MultiCropBatch batch;
        REQUIRE(lp.next(batch));
        for (size_t g = 0; g < batch.groups.size(); ++g)
            for (DType dt : {DType::f32, DType::bf16}) {
                const Tensor cpu = augment_group(batch.groups[g], batch.params[g], Device::cpu(), dt);
                const Tensor gpu = augment_group(batch.groups[g], batch.params[g], Device::cuda(0), dt);
                CHECK(gpu.device() == Device::cuda(0));
                const std::vector<float> x = cpu.to(DType::f32).to_vector<float>();
                const std::vector<float> y = gpu.to(Device::cpu()).to(DType::f32).to_vector<float>();
                REQUIRE(x.size() == y.size());
                double max_err = 0, sum_err = 0;
                for (size_t i = 0; i < x.size(); ++i) {
                    const double e = std::fabs(double(x[i]) - double(y[i]));
                    max_err = std::max(max_err, e), sum_err += e;
                }
                CHECK(max_err < (dt == DType::f32 ? 0.05 : 0.1));  // normalised units: 1/255 of a pixel ~ 0.017
                CHECK(sum_err / double(x.size()) < (dt == DType::f32 ? 1e-3 : 1e-2));
            }
    }
}
