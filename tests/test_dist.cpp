// Distributed engine: the communicator's collectives (sum in rank order, so results are checked bit for bit
// against the same sum formed locally; asynchronous all-reduces interleaved with blocking ones), data parallel on a
// small CNN with synchronised BatchNorm (2 or 3 ranks × B/world equal one process × B: loss, gradients, updated
// weights and running statistics within fp32 tolerance; buckets launched during backward; bucket size 1 KiB, 1 MiB
// or everything and overlap on or off change no bit) and the collective timeout. Suites: "cpu" (single process),
// "mpi" (under mpirun -np 2 / 3), "mpi_timeout" (under mpirun with a short SSLIGHT_COLLECTIVE_TIMEOUT_S: must abort).
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <vector>

#include "engine/autograd.h"
#include "engine/dist/communicator.h"
#include "engine/dist/data_parallel.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/pool.h"
#include "engine/ops/softmax.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"

using namespace sslight;
using namespace sslight::dist;

namespace {

std::shared_ptr<Communicator> mpi_comm() {
    static std::shared_ptr<Communicator> c = make_communicator(Backend::mpi);
    return c;
}

// Value of element i on rank r: distinct per rank and element, never zero, not exactly representable sums.
double value_at(int r, int64_t i) { return 0.37 * (r + 1) + 0.011 * static_cast<double>(i) - 1.3 / (i + 3.0); }

template <class T>
void check_all_reduce(Communicator& c, int64_t n, ReduceOp op) {
    std::vector<T> mine(static_cast<size_t>(n)), expect(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        T acc{};
        for (int r = 0; r < c.world(); ++r) {
            T v = std::is_integral<T>::value ? static_cast<T>(1000 * (r + 1) + 7 * i - 3) : static_cast<T>(value_at(r, i));
            if (r == c.rank()) mine[static_cast<size_t>(i)] = v;
            acc = r == 0 ? v : static_cast<T>(acc + v);  // rank order, as the backend sums
        }
        expect[static_cast<size_t>(i)] = op == ReduceOp::mean ? static_cast<T>(acc / static_cast<T>(c.world())) : acc;
    }
    Tensor t = from_vector<T>(mine, {n});
    c.all_reduce(t, op);
    std::vector<T> got = t.to_vector<T>();
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i) bad += got[i] != expect[i];
    CHECK_MESSAGE(bad == 0, std::string(dtype_name(t.dtype())), " n=", n, ": ", bad, " elements differ from the rank-order sum");
}

// The all_reduce expectations above through all_reduce_async: several in flight at once, a blocking all_reduce
// issued between them, waited for in reverse order; results bit-identical to the rank-order sum.
void check_all_reduce_async(Communicator& c) {
    const std::vector<int64_t> sizes = {5, 1001, 3, 70000};
    std::vector<Tensor> ts, want;
    std::vector<std::shared_ptr<Work>> works;
    for (size_t k = 0; k < sizes.size(); ++k) {
        Tensor t = full({sizes[k]}, 0.0, k % 2 ? DType::f64 : DType::f32);
        Tensor w = full({sizes[k]}, 0.0, t.dtype());
        for (int r = 0; r < c.world(); ++r) {
            Tensor v = randn({sizes[k]}, RngKey{77 + k, static_cast<uint64_t>(r)}).to(t.dtype());
            if (r == c.rank()) t = v.clone();
            add_(w, v);  // rank order, as the backend sums
        }
        ts.push_back(t);
        want.push_back(w);
        works.push_back(c.all_reduce_async(ts.back(), ReduceOp::sum));
        Tensor blocking = full({2}, double(c.rank()), DType::f64);
        c.all_reduce(blocking);
        CHECK(blocking.to_vector<double>()[0] == double(c.world() * (c.world() - 1) / 2));
    }
    for (size_t k = sizes.size(); k-- > 0;) {
        works[k]->wait();
        CHECK(works[k]->test());
        const Tensor a = ts[k].to(DType::f64), b = want[k].to(DType::f64);
        CHECK_MESSAGE(a.to_vector<double>() == b.to_vector<double>(), "async all_reduce ", k, " (", sizes[k],
                      " elements) differs from the rank-order sum");
    }
    Tensor mean = full({4}, double(c.rank() + 1), DType::f64);
    c.all_reduce_async(mean, ReduceOp::mean)->wait();
    CHECK(mean.to_vector<double>()[3] == (c.world() + 1) / 2.0);
}

class SmallCnn : public nn::Module {
public:
    // hidden > 0 adds a Linear(width, hidden) + ReLU before the classifier (a parameter of hidden·width floats).
    explicit SmallCnn(int64_t width = 16, int64_t hidden = 0) : Module("SmallCnn") {
        conv = register_module("conv", std::make_shared<nn::Conv2d>(3, width, 3, nn::Conv2dOptions{1, 1, 1, 1, true}));
        bn = register_module("bn", std::make_shared<nn::BatchNorm>(width));
        if (hidden > 0) mid = register_module("mid", std::make_shared<nn::Linear>(width, hidden));
        fc = register_module("fc", std::make_shared<nn::Linear>(hidden > 0 ? hidden : width, 5));
    }
    Tensor forward(const Tensor& x) override {
        Tensor h = global_avg_pool(relu(bn->forward(conv->forward(x))));
        return fc->forward(mid ? relu(mid->forward(h)) : h);
    }
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::BatchNorm> bn;
    std::shared_ptr<nn::Linear> mid, fc;
};

struct StepResult {
    double loss = 0;
    std::vector<std::vector<float>> grads, params, buffers;
};

// One SGD step (momentum, weight decay) on (x, y); with dp the gradients are averaged and the loss is the
// mean over ranks (every rank holds an equal share).
StepResult train_step(SmallCnn& m, const Tensor& x, const Tensor& y, DataParallel* dp) {
    m.zero_grad();
    Tensor loss = cross_entropy(m(x), y);
    loss.backward();
    if (dp) dp->synchronize_gradients();
    StepResult out;
    for (Tensor* p : m.parameters(true)) out.grads.push_back(p->grad().to_vector<float>());
    optim::SGD sgd({optim::ParamGroup{m.parameters(true), 0.1, 1e-4, true, "all"}}, 0.9);
    sgd.step();
    Tensor l = loss.detach().clone();
    if (dp) dp->comm().all_reduce(l, ReduceOp::mean);
    out.loss = l.item();
    for (Tensor* p : m.parameters(true)) out.params.push_back(p->to_vector<float>());
    for (auto& [name, b] : m.named_buffers())
        if (b->dtype() == DType::f32) out.buffers.push_back(b->to_vector<float>());
    return out;
}

void check_close(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want,
                 const char* what) {
    REQUIRE(got.size() == want.size());
    for (size_t t = 0; t < got.size(); ++t) {
        REQUIRE(got[t].size() == want[t].size());
        int bad = 0;
        size_t first = 0;
        for (size_t i = 0; i < got[t].size(); ++i) {
            if (std::fabs(got[t][i] - want[t][i]) <= 1e-5 + 1e-4 * std::fabs(want[t][i])) continue;
            if (bad++ == 0) first = i;
        }
        CHECK_MESSAGE(bad == 0, std::string(what), " tensor ", t, ": ", bad, " mismatches, first at ", first, ": ",
                      got[t][first], " vs ", want[t][first]);
    }
}

constexpr int64_t kBatch = 12;  // divisible by 1, 2, 3 and 4
Tensor batch_images() { return randn({kBatch, 7, 7, 3}, RngKey{2024, 1}); }
Tensor batch_labels() {
    std::vector<int64_t> y(kBatch);
    for (int64_t i = 0; i < kBatch; ++i) y[static_cast<size_t>(i)] = (i * 3 + 1) % 5;
    return from_vector<int64_t>(y, {kBatch});
}

// Data parallel on this rank's share of the batch against one process on the whole batch.
void check_data_parallel(std::shared_ptr<Communicator> comm, size_t bucket_bytes) {
    const int w = comm->world(), r = comm->rank();
    REQUIRE(kBatch % w == 0);
    nn::manual_seed(11);
    SmallCnn ref;
    nn::manual_seed(11);
    SmallCnn model;
    if (r != 0)
        for (Tensor* p : model.parameters()) mul_(*p, 1.5);  // broadcast_parameters must undo this
    DataParallel dp(model, comm, bucket_bytes);
    dp.enable_sync_batchnorm();
    dp.broadcast_parameters();
    auto rp = ref.parameters(), mp = model.parameters();
    for (size_t i = 0; i < rp.size(); ++i) CHECK(rp[i]->to_vector<float>() == mp[i]->to_vector<float>());

    Tensor x = batch_images(), y = batch_labels();
    const int64_t b = kBatch / w;
    StepResult want = train_step(ref, x, y, nullptr);
    StepResult got = train_step(model, x.slice(r * b, (r + 1) * b), y.slice(r * b, (r + 1) * b), &dp);
    CHECK(got.loss == doctest::Approx(want.loss).epsilon(1e-5));
    check_close(got.grads, want.grads, "gradient");
    check_close(got.params, want.params, "updated weight");
    check_close(got.buffers, want.buffers, "running statistic");

    // Every rank holds the very same weights (bit for bit).
    Tensor flat = from_vector<float>(got.params[0], {1, static_cast<int64_t>(got.params[0].size())});
    Tensor all;
    comm->all_gather(flat, all);
    std::vector<float> rows = all.to_vector<float>();
    for (int q = 1; q < w; ++q)
        CHECK(std::equal(rows.begin(), rows.begin() + flat.numel(), rows.begin() + q * flat.numel()));
}

struct Synced {
    std::vector<std::vector<float>> grads;
    size_t buckets = 0;
    size_t launched_before_last = 0;  // buckets in flight when backward reached the first layer's weight
};

// One backward + synchronize_gradients on this rank's share of a CNN with a 1.2 MB layer (48 -> 6400).
Synced synced_grads(std::shared_ptr<Communicator> comm, size_t bucket_bytes, bool overlap) {
    nn::manual_seed(5);
    SmallCnn model(48, 6400);
    Synced out;
    DataParallel* dpp = nullptr;
    // Registered before DataParallel's hooks, so it runs before conv.weight's own bucket launches.
    const uint64_t probe = add_post_accumulate_hook(model.conv->weight, [&](const Tensor&) {
        out.launched_before_last = dpp->num_launched();
    });
    DataParallel dp(model, comm, bucket_bytes, overlap);
    dpp = &dp;
    dp.enable_sync_batchnorm();
    out.buckets = dp.num_buckets();
    const int64_t b = kBatch / comm->world();
    Tensor x = batch_images().slice(comm->rank() * b, (comm->rank() + 1) * b);
    cross_entropy(model(x), batch_labels().slice(comm->rank() * b, (comm->rank() + 1) * b)).backward();
    CHECK(dp.num_launched() == (overlap ? dp.num_buckets() : 0));  // every bucket is on its way after backward
    dp.synchronize_gradients();
    CHECK(dp.num_launched() == 0);
    remove_post_accumulate_hook(probe);
    for (Tensor* p : model.parameters(true)) out.grads.push_back(p->grad().to_vector<float>());
    return out;
}

// Buckets of 1 KiB, 1 MiB and everything, overlapped with backward or not: the same bits. With overlap, the
// buckets holding the last layers are launched before backward reaches the first layer.
void check_bucket_independence(std::shared_ptr<Communicator> comm) {
    const Synced all = synced_grads(comm, size_t(1) << 40, false);
    CHECK(all.buckets == 1);
    for (size_t bytes : {size_t(1) << 10, size_t(1) << 20, size_t(1) << 40}) {
        for (bool overlap : {true, false}) {
            INFO("bucket bytes ", bytes, (overlap ? ", overlapped" : ", after backward"));
            const Synced s = synced_grads(comm, bytes, overlap);
            if (bytes == size_t(1) << 10) CHECK(s.buckets > 3);
            if (bytes == size_t(1) << 20) CHECK(s.buckets == 3);  // [fc + mid.bias], [mid.weight], [bn + conv]
            if (overlap && s.buckets > 1) {
                CHECK(s.launched_before_last >= 1);
                CHECK(s.launched_before_last < s.buckets);
            }
            REQUIRE(s.grads.size() == all.grads.size());
            for (size_t i = 0; i < s.grads.size(); ++i) CHECK_MESSAGE(s.grads[i] == all.grads[i], "parameter ", i);
        }
    }
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("single communicator: identity collectives") {
        auto c = make_communicator(Backend::single);
        CHECK(std::string(c->backend_name()) == "single");
        CHECK(c->rank() == 0);
        CHECK(c->world() == 1);
        check_all_reduce<float>(*c, 7, ReduceOp::sum);
        check_all_reduce<double>(*c, 1, ReduceOp::mean);
        check_all_reduce<int64_t>(*c, 5, ReduceOp::mean);
        Tensor in = randn({3, 5}, RngKey{1, 2}), out;
        c->all_gather(in, out);
        CHECK(out.to_vector<float>() == in.to_vector<float>());
        Tensor wrong = zeros({4, 5});
        CHECK_THROWS_AS(c->all_gather(in, wrong), ShapeError);
        CHECK_THROWS(c->broadcast(in, 1));
        c->barrier();
    }

    TEST_CASE("backend names and the timeout variable") {
        CHECK(parse_backend("auto") == Backend::automatic);
        CHECK(parse_backend("nccl") == Backend::nccl);
        CHECK_THROWS_AS(parse_backend("gloo"), ConfigError);
        if (!nccl_built()) CHECK_THROWS_AS(make_communicator(Backend::nccl), ConfigError);
        setenv("SSLIGHT_COLLECTIVE_TIMEOUT_S", "2.5", 1);
        CHECK(collective_timeout_s() == 2.5);
        setenv("SSLIGHT_COLLECTIVE_TIMEOUT_S", "soon", 1);
        CHECK_THROWS_AS(collective_timeout_s(), ConfigError);
        unsetenv("SSLIGHT_COLLECTIVE_TIMEOUT_S");
        CHECK(collective_timeout_s() == 300.0);
    }

    TEST_CASE("data parallel on one rank equals plain training") {
        check_data_parallel(make_communicator(Backend::single), 25 << 20);
        check_bucket_independence(make_communicator(Backend::single));
    }

    TEST_CASE("data parallel: a gradient missing on every rank stays missing") {
        nn::manual_seed(3);
        SmallCnn model(8);
        DataParallel dp(model, make_communicator(Backend::single), 256, /*overlap=*/false);
        Tensor x = batch_images();
        model.zero_grad();
        Tensor loss = cross_entropy(model(x), batch_labels());
        loss.backward();
        std::vector<float> before = model.fc->weight.grad().to_vector<float>();
        model.conv->bias.zero_grad();
        dp.synchronize_gradients();
        CHECK_FALSE(model.conv->bias.grad().defined());
        CHECK(model.fc->weight.grad().to_vector<float>() == before);
    }

    TEST_CASE("data parallel with overlap: a second backward before synchronize_gradients is refused") {
        nn::manual_seed(3);
        SmallCnn model(8);
        auto loss = [&] { return cross_entropy(model(batch_images()), batch_labels()); };
        {
            DataParallel dp(model, make_communicator(Backend::single), 256);
            loss().backward();
            CHECK(dp.num_launched() == dp.num_buckets());
            try {
                loss().backward();
                FAIL("expected an Error");
            } catch (const Error& e) {
                CHECK(std::string(e.what()).find("received a second gradient before synchronize_gradients") !=
                      std::string::npos);
            }
        }
        model.zero_grad();
        loss().backward();  // the hooks went with DataParallel
        loss().backward();
        CHECK(model.fc->weight.grad().defined());
    }

    TEST_CASE("single communicator: all_reduce_async is the identity") {
        check_all_reduce_async(*make_communicator(Backend::single));
    }
}

TEST_SUITE("mpi") {
    TEST_CASE("mpi: rank, world and local rank") {
        auto c = mpi_comm();
        CHECK(std::string(c->backend_name()) == "mpi");
        CHECK(c->world() == launcher_world_size());
        CHECK(c->rank() == launcher_rank());
        CHECK(c->local_rank() == launcher_local_rank());
        CHECK(c->world() >= 2);
        Tensor id = from_vector<int64_t>({c->rank()}, {1}), all;
        c->all_gather(id, all);
        std::vector<int64_t> ids = all.to_vector<int64_t>();
        for (int r = 0; r < c->world(); ++r) CHECK(ids[static_cast<size_t>(r)] == r);
    }

    TEST_CASE("mpi: all_reduce sum and mean, f32 f64 i64, sizes 1, odd and large") {
        auto c = mpi_comm();
        for (int64_t n : {1, 7, 1001}) {
            for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean}) {
                check_all_reduce<float>(*c, n, op);
                check_all_reduce<double>(*c, n, op);
                check_all_reduce<int64_t>(*c, n, op);
            }
        }
        check_all_reduce<int32_t>(*c, 3, ReduceOp::sum);
        Tensor u8 = zeros({3}, DType::u8);
        CHECK_THROWS_AS(c->all_reduce(u8), DTypeError);
    }

    TEST_CASE("mpi: all_reduce_async in flight around blocking collectives, bit-identical sums") {
        check_all_reduce_async(*mpi_comm());
    }

    TEST_CASE("mpi: all_gather") {
        auto c = mpi_comm();
        const int w = c->world();
        Tensor in = randn({3, 5}, RngKey{9, static_cast<uint64_t>(c->rank())}), out;
        c->all_gather(in, out);
        REQUIRE(out.shape() == Shape{3 * w, 5});
        for (int r = 0; r < w; ++r)
            CHECK(out.slice(3 * r, 3 * r + 3).to_vector<float>() ==
                  randn({3, 5}, RngKey{9, static_cast<uint64_t>(r)}).to_vector<float>());
        Tensor in64 = full({1}, 2.5 * (c->rank() + 1), DType::f64), out64 = zeros({w}, DType::f64);
        c->all_gather(in64, out64);
        for (int r = 0; r < w; ++r) CHECK(out64.to_vector<double>()[static_cast<size_t>(r)] == 2.5 * (r + 1));
        Tensor wrong = zeros({w + 1}, DType::f64);
        CHECK_THROWS_AS(c->all_gather(in64, wrong), ShapeError);
    }

    TEST_CASE("mpi: broadcast from the first and the last rank") {
        auto c = mpi_comm();
        for (int root : {0, c->world() - 1}) {
            Tensor t = randn({17}, RngKey{4, static_cast<uint64_t>(c->rank())});
            c->broadcast(t, root);
            CHECK(t.to_vector<float>() == randn({17}, RngKey{4, static_cast<uint64_t>(root)}).to_vector<float>());
            Tensor i = full({2, 3}, 10.0 + c->rank(), DType::i64);
            c->broadcast(i, root);
            CHECK(i.to_vector<int64_t>() == std::vector<int64_t>(6, 10 + root));
        }
    }

    TEST_CASE("mpi: barrier waits for the slowest rank") {
        auto c = mpi_comm();
        c->barrier();
        auto t0 = std::chrono::steady_clock::now();
        if (c->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        c->barrier();
        double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CHECK(waited > 0.2);
    }

    TEST_CASE("mpi: data parallel (2 or 3 ranks x B/world) equals one process on B, synchronised BN") {
        check_data_parallel(mpi_comm(), 25 << 20);
        check_data_parallel(mpi_comm(), 1 << 10);
    }

    TEST_CASE("mpi: buckets of 1 KiB, 1 MiB or everything, overlapped or not, give identical gradients") {
        check_bucket_independence(mpi_comm());
    }
}

TEST_SUITE("mpi_timeout") {
    // Run by ctest under mpirun with SSLIGHT_COLLECTIVE_TIMEOUT_S=2: the last rank stalls in the middle of a
    // step, rank 0 must stop the job naming all_reduce #2 and the stalled rank (the test passes on that text).
    TEST_CASE("mpi: a stalled rank stops the job with the timeout message") {
        auto c = mpi_comm();
        Tensor t = ones({5});
        c->all_reduce(t);
        if (c->rank() == c->world() - 1) {
            std::this_thread::sleep_for(std::chrono::seconds(100));
            std::_Exit(0);
        }
        c->all_reduce(t);
        FAIL("the collective with a stalled rank returned");
    }
}

TEST_SUITE("mpi_exit") {
    // The last rank exits in the middle of a step without finalising MPI: the job must end (nonzero), not hang.
    TEST_CASE("mpi: a rank that exits mid-step ends the job") {
        auto c = mpi_comm();
        Tensor t = ones({5});
        c->all_reduce(t);
        if (c->rank() == c->world() - 1) std::_Exit(0);
        c->all_reduce(t);
        FAIL("the collective with an exited rank returned");
    }
}

TEST_SUITE("gpu") {
    // One rank (an MPI singleton): the NCCL path end to end on this machine's GPU, CPU tensors through MPI.
    TEST_CASE("nccl: collectives on CUDA tensors, world 1") {
        if (!nccl_built()) {
            MESSAGE("built without NCCL: nothing to check");
            return;
        }
        auto c = make_communicator(Backend::nccl);
        CHECK(std::string(c->backend_name()) == "nccl");
        Tensor host = randn({1001}, RngKey{8, 1});
        Tensor t = host.to(Device::cuda(0));
        c->all_reduce(t, ReduceOp::sum);
        CHECK(t.to(Device::cpu()).to_vector<float>() == host.to_vector<float>());
        c->all_reduce(t, ReduceOp::mean);
        CHECK(t.to(Device::cpu()).to_vector<float>() == host.to_vector<float>());
        Tensor out;
        c->all_gather(t.reshape({7, 143}), out);
        CHECK(out.device().is_cuda());
        CHECK(out.to(Device::cpu()).to_vector<float>() == host.to_vector<float>());
        c->broadcast(t, 0);
        c->all_reduce_async(t, ReduceOp::sum)->wait();  // the second NCCL communicator and its stream
        CHECK(t.to(Device::cpu()).to_vector<float>() == host.to_vector<float>());
        Tensor cpu = host.clone();
        c->all_reduce(cpu, ReduceOp::sum);  // a CPU tensor goes through MPI
        CHECK(cpu.to_vector<float>() == host.to_vector<float>());
        c->barrier();
    }
}
