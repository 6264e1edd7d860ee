// `sslight pretrain` data parallel (issue 7), "mpi" suite under mpirun -np 2: a tiny DINO run on 2 ranks × B/2
// against one process on B (each rank runs the reference itself with a single-process communicator): the first
// step's loss within fp32 rounding, the updates of every parameter (student, teacher) and of the centre in the
// checkpoints after steps 1, 2 and 3 within fp32 tolerance, the kNN of the backbone at random init (features
// extracted in shards and gathered) identical; only rank 0 writes files (every rank is given its own output
// folder, and rank 1's must stay absent). "cpu" suite: the single-rank helpers (shards, batch split, consensus).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <turbojpeg.h>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/pretrain.h"
#include "engine/dist/communicator.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/random.h"
#include "ssl/distributed.h"
#include "tests/files.h"

using namespace sslight;
using namespace sslight::apps;

namespace {

std::shared_ptr<dist::Communicator> mpi_comm() {
    static std::shared_ptr<dist::Communicator> c = dist::make_communicator(dist::Backend::mpi);
    return c;
}

bool exists(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0;
}

// A fresh folder name per process and tag (created by pretrain itself, removed by the test).
std::string scratch(const std::string& tag, int rank) {
    return "/tmp/sslight_test_dist_pretrain_" + std::to_string(getpid()) + "_" + tag + "_" + std::to_string(rank);
}

// DINO on a ResNet18 at 32/16-px crops of a generated 10-class set: 24 images, global batch 8, 3 steps (a checkpoint
// after each), kNN at the end.
PretrainConfig tiny_config() {
    const std::vector<std::string> sets = {
        "run.epochs=1",           "run.batch_size=8",         "run.log_every=1",
        "data.global_size=32",    "data.local_size=16",       "data.n_local=2",
        "data.max_train_samples=24", "method.dino_out_dim=64", "method.dino_hidden_dim=64",
        "method.dino_bottleneck_dim=16", "optim.warmup_epochs=0", "optim.optimizer=sgd",
        "optim.final_lr=0",       "eval.knn_at_end=true",     "eval.knn_k=5",
        "model.backbone=resnet18", "checkpoint.every_steps=1", "checkpoint.keep=3"};
    return parse_config(builtin_demo_config(), "tiny.toml", sets);
}

const EmbeddedData& tiny_data() {
    static const EmbeddedData d = generated_digits(32, 4, 7);
    return d;
}

// data_dir empty: the generated digits; else that ImageFolder through the threaded loader.
PretrainResult run_tiny(std::shared_ptr<dist::Communicator> comm, const std::string& out,
                        const std::string& data_dir = "") {
    PretrainOptions o;
    o.config = tiny_config();
    o.out_dir = out;
    o.data = &tiny_data();
    o.data_dir = data_dir;
    o.progress = 0;
    o.comm = std::move(comm);
    return run_pretrain(o);
}

// root/<class>/i.jpg: 24 JPEGs of odd sizes over 3 classes (textured, no flat regions).
std::string jpeg_folder(const std::string& root) { return test::write_jpeg_folder(root, 24); }

// The method of the run's config at its initial weights, or loaded from a checkpoint.
std::shared_ptr<ssl::Method> initial_method(const PretrainConfig& c) {
    nn::init_generator() = Generator(c.seed);
    return ssl::make_method(method_config_of(c));
}
std::shared_ptr<ssl::Method> loaded_method(const PretrainConfig& c, const std::string& checkpoint) {
    auto m = initial_method(c);
    load_checkpoint(checkpoint, *m, nullptr, c);
    return m;
}

// The loss of the first "step" record of a metrics.jsonl.
double first_loss(const std::string& dir) {
    std::ifstream f(dir + "/metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
        const size_t at = line.find("\"loss\":");
        if (line.find("\"type\":\"step\"") != std::string::npos && at != std::string::npos)
            return std::strtod(line.c_str() + at + 7, nullptr);
    }
    FAIL("no step record in ", dir, "/metrics.jsonl");
    return 0;
}

// The updates u = w − w_init of every parameter (student, teacher) and of DINO's centre, data parallel (got) against
// one process (want): per tensor, max |u_got − u_want| <= tol · max |u_want| + floor, floor = the f32 rounding of
// the weights (5e-7 · max |w|) + 1e-4 of the largest update of any tensor (the biases before a BatchNorm have a
// gradient of 0 up to rounding); over all tensors, ‖u_got − u_want‖₂ <= tol_l2 · ‖u_want‖₂.
void check_updates(ssl::Method& init, ssl::Method& got, ssl::Method& want, double tol, double tol_l2) {
    auto with_centre = [](ssl::Method& m) {
        auto all = m.named_parameters(false);
        for (auto& b : m.named_buffers())
            if (b.first == "center") all.push_back(b);
        return all;
    };
    const auto pi = with_centre(init), pg = with_centre(got), pw = with_centre(want);
    REQUIRE(pg.size() == pw.size());
    REQUIRE(pi.size() == pw.size());
    std::vector<Tensor> ug, uw;
    double largest = 0;
    for (size_t i = 0; i < pg.size(); ++i) {
        const Tensor w0 = pi[i].second->to(DType::f64);
        ug.push_back(sub(pg[i].second->to(DType::f64), w0));
        uw.push_back(sub(pw[i].second->to(DType::f64), w0));
        largest = std::max(largest, max(abs(uw.back())).item());
    }
    REQUIRE(largest > 0);
    double err2 = 0, norm2 = 0, worst = 0;
    for (size_t i = 0; i < pg.size(); ++i) {
        const Tensor d = sub(ug[i], uw[i]);
        const double scale = max(abs(uw[i])).item(), err = max(abs(d)).item();
        const double floor = 5e-7 * max(abs(pw[i].second->to(DType::f64))).item() + 1e-4 * largest;
        worst = std::max(worst, err / (scale + floor));
        CHECK_MESSAGE(err <= tol * scale + floor, pg[i].first, ": update error ", err, " over update scale ", scale);
        err2 += sum(mul(d, d)).item(), norm2 += sum(mul(uw[i], uw[i])).item();
    }
    const double rel = std::sqrt(err2 / norm2);
    MESSAGE("updates: relative L2 error ", rel, ", worst tensor ", worst);
    CHECK(rel <= tol_l2);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("data-parallel helpers with one rank: shards, batch split, consensus") {
        auto single = dist::make_communicator(dist::Backend::single);
        CHECK(dist::shard_range(10, 0, 1) == std::make_pair<int64_t, int64_t>(0, 10));
        CHECK(dist::shard_range(10, 3, 4) == std::make_pair<int64_t, int64_t>(9, 10));
        CHECK(dist::shard_range(5, 3, 4) == std::make_pair<int64_t, int64_t>(5, 5));
        CHECK_THROWS(dist::shard_range(5, 4, 4));
        Tensor rows = randn({7, 3}, RngKey{3, 1});
        CHECK(dist::all_gather_shards(*single, rows, 7).to_vector<float>() == rows.to_vector<float>());
        CHECK_THROWS_AS(dist::all_gather_shards(*single, rows, 8), ShapeError);
        CHECK(ssl::local_batch_of(64, 8) == 8);
        CHECK_THROWS_AS(ssl::local_batch_of(10, 4), ConfigError);
        CHECK(dist::rank_device(*single, Device::cpu()) == Device::cpu());
        auto m = initial_method(tiny_config());
        ssl::DataParallelTrainer t(*m, single, 8);
        CHECK(t.is_root());
        CHECK(t.local_batch() == 8);
        CHECK(t.global_loss(2.5) == 2.5);
        CHECK(t.any_rank(true));
        CHECK_FALSE(t.any_rank(false));
        CHECK(t.step_consensus(2.5, true) == std::make_pair(2.5, true));
        t.check_agree(3, "a value");
    }
}

TEST_SUITE("mpi") {
    // Step 1 is mathematically the same step from the same weights, so the runs differ by rounding only (the
    // BatchNorm sums are formed per rank); later steps start from weights that differ by rounding, which these small
    // f32 problems amplify. Measured relative L2 error of the updates after steps 1 / 2 / 3 (worst tensor): textured
    // JPEGs 1.2e-5 / 0.24 % / 1.1 % (0.3 % / 4 % / 6 %); the 32-px digits, whose flat regions put whole regions of
    // ReLU inputs within rounding of 0, 0.5 % / 2.4 % / 3.3 % (7 % / 14 % / 16 %). The methods' exact equivalence is
    // tests/test_dist_methods.cpp's f64 test. Rank-local BatchNorm instead of the synchronised one gives 166 % from
    // step 1 on; gradients not averaged are refused at the second backward (the overlap check).
    TEST_CASE("mpi: sslight pretrain on 2 ranks x B/2 equals one process on B; only rank 0 writes") {
        auto comm = mpi_comm();
        const int r = comm->rank();
        REQUIRE(comm->world() == 2);
        const std::string ref_dir = scratch("ref", r), dist_dir = scratch("dist", r);
        const PretrainResult want = run_tiny(dist::make_communicator(dist::Backend::single), ref_dir);
        const PretrainResult got = run_tiny(comm, dist_dir);  // rank 1's folder must never appear
        CHECK(want.iterations == 3);
        CHECK(got.iterations == 3);
        CHECK(got.knn_done);
        // Features of the same initial backbone, extracted in two shards and gathered: the same neighbours.
        CHECK(got.knn_random.top1 == want.knn_random.top1);
        CHECK(got.knn_random.top5 == want.knn_random.top5);
        comm->barrier();
        if (r == 0) {
            for (const char* f : {"metrics.jsonl", "config.resolved.toml", "backbone.safetensors"})
                CHECK_MESSAGE(exists(dist_dir + "/" + f), f);
            CHECK(first_loss(dist_dir) == doctest::Approx(first_loss(ref_dir)).epsilon(1e-5));
            const PretrainConfig c = tiny_config();
            const std::vector<std::string> ref_cps = list_checkpoints(ref_dir), dist_cps = list_checkpoints(dist_dir);
            REQUIRE(ref_cps.size() == 3);
            REQUIRE(dist_cps.size() == 3);
            auto init = initial_method(c);
            const double tol[3] = {0.3, 0.5, 0.5}, tol_l2[3] = {0.03, 0.1, 0.1};
            for (size_t k = 0; k < 3; ++k) {
                INFO("after step ", k + 1);
                check_updates(*init, *loaded_method(c, dist_cps[k]), *loaded_method(c, ref_cps[k]), tol[k], tol_l2[k]);
            }
        } else {
            CHECK_MESSAGE(!exists(dist_dir), "rank ", r, " wrote ", dist_dir);
        }
        comm->barrier();
        std::error_code ec;
        std::filesystem::remove_all(ref_dir, ec);
        std::filesystem::remove_all(dist_dir, ec);
    }

    TEST_CASE("mpi: an ImageFolder run through the threaded loader, sharded by rank, equals one process") {
        auto comm = mpi_comm();
        const int r = comm->rank();
        const std::string images = jpeg_folder(scratch("images", r));
        const std::string ref_dir = scratch("folder_ref", r), dist_dir = scratch("folder_dist", r);
        const PretrainResult want = run_tiny(dist::make_communicator(dist::Backend::single), ref_dir, images);
        const PretrainResult got = run_tiny(comm, dist_dir, images);
        CHECK(want.iterations == 3);  // 24 images, batch 8
        CHECK(got.iterations == 3);
        comm->barrier();
        if (r == 0) {
            CHECK(first_loss(dist_dir) == doctest::Approx(first_loss(ref_dir)).epsilon(1e-5));
            const PretrainConfig c = tiny_config();
            const std::vector<std::string> ref_cps = list_checkpoints(ref_dir), dist_cps = list_checkpoints(dist_dir);
            REQUIRE(ref_cps.size() == 3);
            REQUIRE(dist_cps.size() == 3);
            auto init = initial_method(c);
            const double tol[3] = {0.03, 0.3, 0.5}, tol_l2[3] = {2e-4, 0.03, 0.1};
            for (size_t k = 0; k < 3; ++k) {
                INFO("after step ", k + 1);
                check_updates(*init, *loaded_method(c, dist_cps[k]), *loaded_method(c, ref_cps[k]), tol[k], tol_l2[k]);
            }
        } else {
            CHECK_MESSAGE(!exists(dist_dir), "rank ", r, " wrote ", dist_dir);
        }
        comm->barrier();
        std::error_code ec;
        for (const std::string& d : {images, ref_dir, dist_dir}) std::filesystem::remove_all(d, ec);
    }
}

TEST_SUITE("mpi_kill") {
    // Run by ctest under mpirun -np 2 with SSLIGHT_COLLECTIVE_TIMEOUT_S=5 and SSLIGHT_TEST_SIGNAL=KILL or STOP:
    // after its second optimizer step rank 1 is killed (SIGKILL) or stalls (SIGSTOP) while rank 0 goes on into the
    // third step's collectives. The job must end in bounded time: the launcher reports the killed rank, the
    // collective timeout names the stalled one (ctest matches the message).
    TEST_CASE("mpi: a rank killed or stalled in the middle of pretrain ends the job") {
        auto comm = mpi_comm();
        const char* sig = std::getenv("SSLIGHT_TEST_SIGNAL");
        REQUIRE_MESSAGE(sig != nullptr, "set SSLIGHT_TEST_SIGNAL to KILL or STOP");
        PretrainOptions o;
        o.config = tiny_config();
        o.out_dir = scratch("kill", comm->rank());
        o.data = &tiny_data();
        o.progress = 0;
        o.comm = comm;
        o.on_step = [&](int64_t it) {
            if (comm->rank() == 1 && it == 2) std::raise(std::string(sig) == "STOP" ? SIGSTOP : SIGKILL);
        };
        run_pretrain(o);
        FAIL("the run with a dead rank returned");
    }
}
