// batch_norm (engine/ops/batch_norm.h, kernels/batch_norm.h): forward against the direct formula; finite-difference
// gradients in double through the batch statistics (training) and with running statistics (eval), for every
// activation with and without affine; running statistics after one and two steps; the all_reduce hook with two
// simulated ranks (threads) against the full batch; variance accuracy at a large offset; error paths; every kernel
// emulated against the CPU reference (f32, bf16); the op on the GPU against the CPU.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "engine/ops/batch_norm.h"
#include "kernels/batch_norm.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

const Shape kShapes[] = {{5, 3}, {2, 3, 5, 7}, {4, 2, 2, 16}};
const Activation kActs[] = {Activation::none, Activation::relu, Activation::relu6};
const char* act_name(Activation a) {
    return a == Activation::none ? "none" : (a == Activation::relu ? "relu" : "relu6");
}

// Per-channel mean and biased variance of v viewed as (M, C), in double.
struct Moments {
    std::vector<double> mean, var;
};
Moments moments(const std::vector<double>& v, int64_t C) {
    const int64_t M = static_cast<int64_t>(v.size()) / C;
    Moments m{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
    for (int64_t i = 0; i < M * C; ++i) m.mean[i % C] += v[i] / M;
    for (int64_t i = 0; i < M * C; ++i) m.var[i % C] += (v[i] - m.mean[i % C]) * (v[i] - m.mean[i % C]) / M;
    return m;
}

double act_ref(Activation a, double z) {
    if (a == Activation::relu) return std::max(z, 0.0);
    if (a == Activation::relu6) return std::min(std::max(z, 0.0), 6.0);
    return z;
}

// y = act(w·(x - mean)/sqrt(var + eps) + b); empty w/b: no affine.
std::vector<double> bn_ref(const std::vector<double>& x, int64_t C, const Moments& m, const std::vector<double>& w,
                           const std::vector<double>& b, Activation a, double eps = 1e-5) {
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        const size_t c = i % C;
        const double xh = (x[i] - m.mean[c]) / std::sqrt(m.var[c] + eps);
        y[i] = act_ref(a, (w.empty() ? 1.0 : w[c]) * xh + (b.empty() ? 0.0 : b[c]));
    }
    return y;
}

std::vector<double> values(const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>(); }

struct Inputs {
    Tensor x, w, b;
};

// Draws f64 x, weight and bias (undefined without affine) so that no pre-activation lies within 1e-3 of a kink of
// `act` (finite differences must not cross one) and, for relu6 with affine, some outputs sit on each flat part.
Inputs draw(const Shape& shape, uint64_t seed, Activation act, bool affine, Tensor rm, Tensor rv, bool training) {
    const int64_t C = shape.back();
    for (uint64_t s = seed; s < seed + 50; ++s) {
        Inputs in;
        in.x = random_tensor(shape, s, DType::f64, -2.0, 3.0);
        if (affine) {
            const bool r6 = act == Activation::relu6;
            in.w = random_tensor({C}, s + 1000, DType::f64, r6 ? 2.0 : 0.5, r6 ? 4.0 : 2.0);
            in.b = random_tensor({C}, s + 2000, DType::f64, r6 ? 2.0 : -0.5, r6 ? 4.0 : 0.5);
        }
        NoGradGuard ng;
        Tensor rm_c = rm.defined() ? rm.clone() : rm, rv_c = rv.defined() ? rv.clone() : rv;
        BatchNormArgs args;
        args.training = training;
        const std::vector<double> z = values(batch_norm(in.x, in.w, in.b, rm_c, rv_c, args));
        bool ok = true;
        int below = 0, above = 0;
        for (double v : z) {
            ok &= std::fabs(v) >= 1e-3 && std::fabs(v - 6.0) >= 1e-3;
            below += v < 0;
            above += v > 6;
        }
        if (act == Activation::relu6 && affine) ok &= below > 0 && above > 0;
        if (ok) return in;
    }
    FAIL("no kink-free inputs found");
    return {};
}

void check_gradients(const Shape& shape, Activation act, bool affine, bool training, uint64_t seed) {
    Tensor rm, rv;
    if (!training) {
        rm = random_tensor({shape.back()}, seed + 7, DType::f32, -0.5, 0.5);
        rv = random_tensor({shape.back()}, seed + 8, DType::f32, 0.5, 2.0);
    }
    Inputs in = draw(shape, seed, act, affine, rm, rv, training);
    BatchNormArgs args;
    args.training = training;
    args.act = act;
    std::vector<Tensor> leaves{in.x.requires_grad_()};
    if (affine) {
        leaves.push_back(in.w.requires_grad_());
        leaves.push_back(in.b.requires_grad_());
    }
    const std::string what = str(training ? "train " : "eval ", shape_str(shape), " ", act_name(act),
                                 affine ? " affine" : " plain");
    gradcheck(
        [&](const std::vector<Tensor>& t) {
            return batch_norm(t[0], affine ? t[1] : Tensor(), affine ? t[2] : Tensor(), rm, rv, args);
        },
        leaves, what);
}

// A CPU all-reduce across two threads ("ranks"): each caller blocks until both arrived, then both get a + b,
// written in place. sizes: the numel of every call, per rank.
class TwoRankSum {
public:
    StatsAllReduce hook(int rank) {
        return [this, rank](Tensor& t) { reduce(rank, t); };
    }
    std::vector<int64_t> sizes[2];

private:
    void reduce(int rank, Tensor& t) {
        std::vector<double> v = t.to_vector<double>(), r;
        {
            std::unique_lock<std::mutex> lock(m_);
            sizes[rank].push_back(t.numel());
            const uint64_t gen = gen_;
            if (arrived_ == 0) {
                acc_ = v;
            } else {
                for (size_t i = 0; i < v.size() && i < acc_.size(); ++i) acc_[i] += v[i];
            }
            if (++arrived_ == 2) {
                result_ = acc_;
                arrived_ = 0;
                ++gen_;
                cv_.notify_all();
            } else {
                cv_.wait(lock, [&] { return gen_ != gen; });
            }
            r = result_;
        }
        r.resize(static_cast<size_t>(t.numel()));
        Tensor src = from_vector(r, t.shape()).to(t.dtype());
        runtime::copy(t.raw_data(), t.device(), src.raw_data(), Device::cpu(), t.nbytes());
    }
    std::mutex m_;
    std::condition_variable cv_;
    int arrived_ = 0;
    uint64_t gen_ = 0;
    std::vector<double> acc_, result_;
};

// One rank's (or the full batch's) training step: outputs, gradients and the updated running statistics.
struct StepOut {
    Tensor y, dx, dw, db, rm, rv;
};
StepOut step(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, BatchNormArgs args) {
    StepOut o;
    Tensor xl = x.detach().clone().requires_grad_(), wl = w.detach().clone().requires_grad_();
    Tensor bl = b.detach().clone().requires_grad_();
    o.rm = full({x.size(-1)}, 0.25);
    o.rv = full({x.size(-1)}, 1.5);
    o.y = batch_norm(xl, wl, bl, o.rm, o.rv, args);
    o.y.backward(dy.to(o.y.dtype()));
    o.dx = xl.grad();
    o.dw = wl.grad();
    o.db = bl.grad();
    return o;
}

Tensor cat_rows(const Tensor& a, const Tensor& b) {
    std::vector<double> v = a.to_vector<double>(), w = b.to_vector<double>();
    v.insert(v.end(), w.begin(), w.end());
    Shape s = a.shape();
    s[0] += b.shape()[0];
    return from_vector(v, s);
}

// Runs the two halves x[:split], x[split:] as two ranks in two threads with a summing hook and checks outputs,
// gradients and running statistics against the full batch.
void check_two_ranks(const Tensor& x, int64_t split, Activation act, Tol tol) {
    const int64_t C = x.size(-1), N = x.size(0);
    Tensor w = random_tensor({C}, 31, x.dtype(), 0.5, 1.5), b = random_tensor({C}, 32, x.dtype(), -0.2, 0.4);
    Tensor dy = random_tensor(x.shape(), 33, x.dtype());
    BatchNormArgs args;
    args.act = act;
    StepOut full_batch = step(x, w, b, dy, args);
    TwoRankSum sum;
    StepOut r[2];
    const int64_t lo[2] = {0, split}, hi[2] = {split, N};
    std::vector<std::thread> threads;
    for (int k = 0; k < 2; ++k)
        threads.emplace_back([&, k] {
            BatchNormArgs a = args;
            a.all_reduce = sum.hook(k);
            r[k] = step(x.slice(lo[k], hi[k]), w, b, dy.slice(lo[k], hi[k]), a);
        });
    for (auto& t : threads) t.join();
    for (int k = 0; k < 2; ++k) {
        CHECK(sum.sizes[k] == std::vector<int64_t>{C + 1, C, 2 * C});  // forward: sums, M2; backward: dz sums
        expect_close(r[k].rm, full_batch.rm, tol, "rank running_mean");
        expect_close(r[k].rv, full_batch.rv, tol, "rank running_var");
    }
    expect_close(cat_rows(r[0].y, r[1].y), full_batch.y, tol, "two-rank y");
    expect_close(cat_rows(r[0].dx, r[1].dx), full_batch.dx, tol, "two-rank dx");
    std::vector<double> dw = values(r[0].dw), db = values(r[0].db), dw1 = values(r[1].dw), db1 = values(r[1].db);
    for (int64_t c = 0; c < C; ++c) {
        dw[c] += dw1[c];
        db[c] += db1[c];
    }
    expect_close(dw, values(full_batch.dw), tol, "two-rank dweight (local sums add up)");
    expect_close(db, values(full_batch.db), tol, "two-rank dbias");
}

std::vector<double> normal_values(size_t n, uint64_t seed, double mean, double stddev) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(mean, stddev);
    std::vector<double> v(n);
    for (auto& x : v) x = static_cast<double>(static_cast<float>(d(rng)));  // representable in f32
    return v;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("forward matches the direct formula in training mode (every activation, with/without affine)") {
        uint64_t seed = 100;
        for (const Shape& shape : kShapes)
            for (Activation act : kActs)
                for (bool affine : {true, false})
                    for (DType dt : {DType::f32, DType::f64}) {
                        const int64_t C = shape.back();
                        Tensor x = random_tensor(shape, ++seed, dt, -2.0, 3.0);
                        Tensor w = affine ? random_tensor({C}, ++seed, dt, 0.5, 3.0) : Tensor();
                        Tensor b = affine ? random_tensor({C}, ++seed, dt, -1.0, 4.0) : Tensor();
                        Tensor rm, rv;
                        BatchNormArgs args;
                        args.act = act;
                        Tensor y = batch_norm(x, w, b, rm, rv, args);
                        CHECK(y.dtype() == dt);
                        const std::vector<double> xv = values(x);
                        expect_close(values(y), bn_ref(xv, C, moments(xv, C), values(w), values(b), act),
                                     tol_for(dt), str("forward ", shape_str(shape), " ", act_name(act)));
                    }
    }

    TEST_CASE("gradcheck in training mode: gradients through the batch statistics") {
        uint64_t seed = 200;
        for (const Shape& shape : kShapes)
            for (Activation act : kActs)
                for (bool affine : {true, false}) check_gradients(shape, act, affine, true, seed += 10);
    }

    TEST_CASE("gradcheck in eval mode: running statistics are constants") {
        uint64_t seed = 500;
        for (const Shape& shape : kShapes)
            for (Activation act : kActs)
                for (bool affine : {true, false}) check_gradients(shape, act, affine, false, seed += 10);
    }

    TEST_CASE("running statistics after one and two steps (unbiased variance), momentum") {
        for (double momentum : {0.1, 0.3})
            for (const Shape& shape : {Shape{6, 4}, Shape{2, 3, 5, 7}}) {
                const int64_t C = shape.back(), M = shape_numel(shape) / C;
                Tensor rm = zeros({C}), rv = ones({C});
                std::vector<double> em(C, 0.0), ev(C, 1.0);
                BatchNormArgs args;
                args.momentum = momentum;
                for (int s = 0; s < 2; ++s) {
                    Tensor x = random_tensor(shape, 300 + s, DType::f32, -1.0 + 2 * s, 2.0 + 3 * s);
                    batch_norm(x, Tensor(), Tensor(), rm, rv, args);
                    const Moments mo = moments(values(x), C);
                    for (int64_t c = 0; c < C; ++c) {
                        em[c] = (1 - momentum) * em[c] + momentum * mo.mean[c];
                        ev[c] = (1 - momentum) * ev[c] + momentum * mo.var[c] * M / (M - 1);
                    }
                    expect_close(values(rm), em, tol_for(DType::f32), str("running_mean after step ", s + 1));
                    expect_close(values(rv), ev, tol_for(DType::f32), str("running_var after step ", s + 1));
                }
            }
    }

    TEST_CASE("eval mode normalises with the running statistics and leaves them unchanged") {
        for (Activation act : kActs) {
            Tensor x = random_tensor({2, 3, 5, 7}, 41, DType::f32, -2.0, 3.0);
            Tensor w = random_tensor({7}, 42, DType::f32, 0.5, 3.0), b = random_tensor({7}, 43, DType::f32, -1, 4);
            Tensor rm = random_tensor({7}, 44, DType::f32, -0.5, 0.5), rv = random_tensor({7}, 45, DType::f32, 0.5, 2);
            const std::vector<double> rm0 = values(rm), rv0 = values(rv);
            BatchNormArgs args;
            args.training = false;
            args.act = act;
            Tensor y = batch_norm(x, w, b, rm, rv, args);
            expect_close(values(y), bn_ref(values(x), 7, Moments{rm0, rv0}, values(w), values(b), act),
                         tol_for(DType::f32), str("eval forward ", act_name(act)));
            CHECK(values(rm) == rm0);
            CHECK(values(rv) == rv0);
        }
        Tensor rm = zeros({3}), rv = ones({3});
        BatchNormArgs eval;
        eval.training = false;
        CHECK_NOTHROW(batch_norm(random_tensor({1, 3}, 46), Tensor(), Tensor(), rm, rv, eval));  // one row is fine
    }

    TEST_CASE("training without running statistics uses the batch statistics and updates nothing") {
        Tensor x = random_tensor({4, 2, 2, 16}, 51, DType::f32, -1.0, 2.0);
        Tensor none_m, none_v, rm = zeros({16}), rv = ones({16});
        BatchNormArgs args;
        Tensor y0 = batch_norm(x, Tensor(), Tensor(), none_m, none_v, args);
        Tensor y1 = batch_norm(x, Tensor(), Tensor(), rm, rv, args);
        CHECK(!none_m.defined());
        expect_close(y0, y1, {0, 0}, "same output with or without running statistics");
    }

    TEST_CASE("all_reduce hook: two simulated ranks equal the full batch (packing and call protocol)") {
        check_two_ranks(random_tensor({8, 5}, 61, DType::f64, -1.0, 3.0), 4, Activation::none, tol_for(DType::f64));
        check_two_ranks(random_tensor({8, 5}, 62, DType::f64, -1.0, 3.0), 3, Activation::relu, tol_for(DType::f64));
        check_two_ranks(random_tensor({5, 3, 2, 7}, 63, DType::f64, -1.0, 3.0), 2, Activation::relu6,
                        tol_for(DType::f64));
        check_two_ranks(random_tensor({6, 4, 3, 9}, 64, DType::f32, -1.0, 3.0), 1, Activation::relu,
                        tol_for(DType::f32));
    }

    TEST_CASE("large offset (1e4 + N(0, 1)): f32 variance accurate to 1e-3 relative, locally and across ranks") {
        const int64_t M = 4096, C = 5;
        const std::vector<double> xv = normal_values(M * C, 71, 1e4, 1.0);
        const Tensor x = from_vector(xv, {M, C}).to(DType::f32);
        const Moments ref = moments(xv, C);
        Tensor rm = zeros({C}), rv = ones({C});
        BatchNormArgs args;
        args.momentum = 1.0;  // running statistics become the batch statistics
        Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, args);
        const Moments ym = moments(values(y), C);
        for (int64_t c = 0; c < C; ++c) {
            CHECK(std::fabs(values(rv)[c] / (ref.var[c] * M / (M - 1)) - 1) < 1e-3);
            CHECK(std::fabs(values(rm)[c] - ref.mean[c]) < 1e-3);
            CHECK(std::fabs(ym.mean[c]) < 1e-3);
            CHECK(std::fabs(ym.var[c] - 1) < 1e-3);
        }
        TwoRankSum sum;
        Tensor r_rv[2];
        std::vector<std::thread> threads;
        for (int k = 0; k < 2; ++k)
            threads.emplace_back([&, k] {
                BatchNormArgs a = args;
                a.all_reduce = sum.hook(k);
                Tensor m = zeros({C});
                r_rv[k] = ones({C});
                batch_norm(x.slice(k * 1000, k ? M : 1000), Tensor(), Tensor(), m, r_rv[k], a);
            });
        for (auto& t : threads) t.join();
        for (int64_t c = 0; c < C; ++c) CHECK(std::fabs(values(r_rv[0])[c] / (ref.var[c] * M / (M - 1)) - 1) < 1e-3);
    }

    TEST_CASE("error paths name the shapes") {
        Tensor x = random_tensor({2, 3}, 81), rm = zeros({3}), rv = ones({3}), none;
        BatchNormArgs args, eval;
        eval.training = false;
        using doctest::Contains;
        CHECK_THROWS_WITH_AS(batch_norm(x, ones({4}), Tensor(), rm, rv, args), Contains("[4]"), ShapeError);
        CHECK_THROWS_WITH_AS(batch_norm(x, ones({4}), Tensor(), rm, rv, args), Contains("[2, 3]"), ShapeError);
        CHECK_THROWS_AS(batch_norm(x, Tensor(), ones({2}), rm, rv, args), ShapeError);
        CHECK_THROWS_WITH_AS(batch_norm(x, Tensor(), Tensor(), none, none, eval), Contains("running_mean"), Error);
        Tensor rm4 = zeros({4}), rm64 = zeros({3}, DType::f64);
        CHECK_THROWS_AS(batch_norm(x, Tensor(), Tensor(), rm4, rv, args), ShapeError);
        CHECK_THROWS_AS(batch_norm(x, Tensor(), Tensor(), rm64, rv, args), DTypeError);
        CHECK_THROWS_AS(batch_norm(x, Tensor(), Tensor(), rm, none, args), Error);
        CHECK_THROWS_AS(batch_norm(random_tensor({6}, 82), Tensor(), Tensor(), none, none, args), ShapeError);
        CHECK_THROWS_AS(batch_norm(random_tensor({1, 3}, 83), Tensor(), Tensor(), rm, rv, args), ShapeError);
        CHECK_THROWS_AS(batch_norm(x.to(DType::bf16), Tensor(), Tensor(), rm, rv, args), DTypeError);
        CHECK_THROWS_AS(batch_norm(x, ones({3}, DType::f64), Tensor(), rm, rv, args), DTypeError);
        BatchNormArgs bad_hook;
        bad_hook.all_reduce = [](Tensor& t) { t = zeros({1}); };
        CHECK_THROWS_AS(batch_norm(x, Tensor(), Tensor(), rm, rv, bad_hook), Error);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {
// Runs every emulated kernel on (M, C) against the CPU reference. Each step is fed the reference's inputs so that
// a failure points at one kernel. Storage outputs (y, dx) use the storage dtype's tolerance; statistics are f32.
template <class T>
void emu_case(int64_t M, int64_t C, uint64_t seed) {
    using kernels::BatchNormParams;
    namespace ek = kernels::emu;
    const std::string tag = str(std::is_same<T, float>::value ? "f32" : "bf16", " M=", M, " C=", C);
    const Tol tol = std::is_same<T, float>::value ? tol_emu_f32() : tol_for(DType::bf16);
    const Tol tol_sums{tol_emu_f32().atol * M, tol_emu_f32().rtol};  // sums of M terms of size ~1
    BatchNormParams p;
    p.M = M;
    p.C = C;
    p.momentum = 0.2;
    const std::vector<T> xs = to_storage<T>(random_vector<float>(M * C, seed, -2, 3));
    const std::vector<float> x = to_float(xs), w = random_vector<float>(C, seed + 1, 1, 3);
    const std::vector<float> b = random_vector<float>(C, seed + 2, 1, 4), rm0 = random_vector<float>(C, seed + 3);
    const std::vector<float> rv0 = random_vector<float>(C, seed + 4, 0.5, 2);
    std::vector<float> local(2 * C), s1(C + 1), s2(C), save(2 * C + 1), rm = rm0, rv = rv0, ev(2 * C + 1);
    kernels::bn_stats_cpu(p, x.data(), local.data(), s1.data());
    kernels::bn_stats_m2_cpu(p, local.data(), s1.data(), s2.data());
    kernels::bn_stats_finalize_cpu(p, s1.data(), s2.data(), save.data(), rm.data(), rv.data());
    kernels::bn_stats_eval_cpu(p, rm0.data(), rv0.data(), ev.data());

    emu::Buffer<T> ex(xs);
    emu::Buffer<float> work(kernels::bn_workspace(p)), e_local(2 * C), e_s1(C + 1), e_s2(C), e_save(2 * C + 1);
    emu::Buffer<float> b_local(local), b_s1(s1), b_s2(s2), b_save(save), e_rm(rm0), e_rv(rv0), e_ev(2 * C + 1);
    emu::Buffer<float> b_rm(rm0), b_rv(rv0), b_w(w), b_b(b);
    ek::bn_stats<T>(p, ex.data(), work.data(), e_local.data(), e_s1.data(), nullptr);
    expect_close(e_local.to_vector(), local, tol_emu_f32(), tag + " stats [mean, M2]");
    expect_close(e_s1.to_vector(), s1, tol_emu_f32(), tag + " stats s1");
    ek::bn_stats_m2(p, b_local.data(), b_s1.data(), e_s2.data(), nullptr);
    expect_close(e_s2.to_vector(), s2, tol_emu_f32(), tag + " stats s2");
    ek::bn_stats_finalize(p, b_s1.data(), b_s2.data(), e_save.data(), e_rm.data(), e_rv.data(), nullptr);
    expect_close(e_save.to_vector(), save, tol_emu_f32(), tag + " finalize save");
    expect_close(e_rm.to_vector(), rm, tol_emu_f32(), tag + " finalize running_mean");
    expect_close(e_rv.to_vector(), rv, tol_emu_f32(), tag + " finalize running_var");
    ek::bn_stats_eval(p, b_rm.data(), b_rv.data(), e_ev.data(), nullptr);
    expect_close(e_ev.to_vector(), ev, tol_emu_f32(), tag + " eval save");

    std::vector<float> dy = to_float(to_storage<T>(random_vector<float>(M * C, seed + 5))), z(M * C);
    kernels::bn_fwd_cpu(p, x.data(), save.data(), w.data(), b.data(), z.data());  // p.act is none here
    for (int64_t i = 0; i < M * C; ++i)  // no gradient where f32 and double masks could disagree
        if (std::fabs(z[i]) < 1e-3 || std::fabs(z[i] - 6) < 1e-3) dy[i] = 0;
    emu::Buffer<T> edy(to_storage<T>(dy)), ey(M * C), edx(M * C);
    for (Activation act : kActs)
        for (bool affine : {true, false}) {
            p.act = static_cast<kernels::BnAct>(act);
            const std::string what = str(tag, " ", act_name(act), affine ? " affine" : " plain");
            const float *wp = affine ? w.data() : nullptr, *bp = affine ? b.data() : nullptr;
            float *ewp = affine ? b_w.data() : nullptr, *ebp = affine ? b_b.data() : nullptr;
            std::vector<float> y(M * C), sums(2 * C), dx(M * C);
            kernels::bn_fwd_cpu(p, x.data(), save.data(), wp, bp, y.data());
            ek::bn_fwd<T>(p, ex.data(), b_save.data(), ewp, ebp, ey.data(), nullptr);
            expect_close(to_float(ey.to_vector()), y, tol, what + " forward");
            kernels::bn_bwd_reduce_cpu(p, x.data(), dy.data(), save.data(), wp, bp, sums.data());
            emu::Buffer<float> e_sums(2 * C), b_sums(sums);
            ek::bn_bwd_reduce<T>(p, ex.data(), edy.data(), b_save.data(), ewp, ebp, work.data(), e_sums.data(),
                                 nullptr);
            expect_close(e_sums.to_vector(), sums, tol_sums, what + " backward sums");
            for (bool training : {true, false}) {
                p.training = training;
                kernels::bn_bwd_dx_cpu(p, x.data(), dy.data(), save.data(), wp, bp, sums.data(), dx.data());
                ek::bn_bwd_dx<T>(p, ex.data(), edy.data(), b_save.data(), ewp, ebp, b_sums.data(), edx.data(), nullptr);
                expect_close(to_float(edx.to_vector()), dx, tol, what + (training ? " dx train" : " dx eval"));
            }
        }
}
}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("every kernel emulated vs the CPU reference (f32, bf16; C not a multiple of 32, ragged chunks)") {
        emu_case<float>(1000, 45, 1);
        emu_case<bf16>(1000, 45, 2);
        emu_case<float>(37, 70, 3);
        emu_case<bf16>(130, 3, 4);
        emu_case<float>(5000, 5, 5);  // many row chunks: exercises the merge lanes
        emu_case<bf16>(97, 129, 6);
    }

    TEST_CASE("emulated statistics at a large offset (1e4 + N(0, 1)): variance accurate to 1e-3 relative") {
        kernels::BatchNormParams p;
        p.M = 4096;
        p.C = 7;
        const std::vector<double> xv = normal_values(p.M * p.C, 72, 1e4, 1.0);
        const Moments ref = moments(xv, p.C);
        emu::Buffer<float> ex(std::vector<float>(xv.begin(), xv.end())), work(kernels::bn_workspace(p));
        emu::Buffer<float> local(2 * p.C), s1(p.C + 1), s2(p.C), save(2 * p.C + 1);
        kernels::emu::bn_stats<float>(p, ex.data(), work.data(), local.data(), s1.data(), nullptr);
        kernels::emu::bn_stats_m2(p, local.data(), s1.data(), s2.data(), nullptr);
        kernels::emu::bn_stats_finalize(p, s1.data(), s2.data(), save.data(), nullptr, nullptr, nullptr);
        for (int64_t c = 0; c < p.C; ++c) {
            CHECK(std::fabs(local[p.C + c] / p.M / ref.var[c] - 1) < 1e-3);
            CHECK(std::fabs(save[c] - ref.mean[c]) < 1e-3);
            CHECK(std::fabs(save[p.C + c] * std::sqrt(ref.var[c] + 1e-5) - 1) < 1e-3);
        }
    }
}
#endif

namespace {
// The op on the GPU (dtype dt) against the CPU in f32 on the same values, with a counting identity hook in training.
void gpu_case(DType dt, const Shape& shape, Activation act, bool training, uint64_t seed) {
    const Device g = Device::cuda(0), cpu = Device::cpu();
    const int64_t C = shape.back();
    const Tol tol = dt == DType::f32 ? tol_gpu_f32() : tol_gpu_bf16();
    const std::string what = str(dtype_name(dt), " ", shape_str(shape), " ", act_name(act), training ? " tr" : " ev");
    // Inputs representable in the GPU dtype, so both sides see the same values.
    Tensor x = random_tensor(shape, seed, DType::f32, -2, 3).to(dt).to(DType::f32);
    Tensor w = random_tensor({C}, seed + 1, DType::f32, 1, 3), b = random_tensor({C}, seed + 2, DType::f32, 1, 4);
    Tensor rm = random_tensor({C}, seed + 3, DType::f32, -.5, .5), rv = random_tensor({C}, seed + 4, DType::f32, .5, 2);
    Tensor rm_g = rm.to(g), rv_g = rv.to(g);
    BatchNormArgs args;
    args.training = training;
    int calls = 0;
    if (training) args.all_reduce = [&calls](Tensor&) { ++calls; };  // one rank: identity
    std::vector<double> z, d = values(random_tensor(shape, seed + 5, DType::f32).to(dt));
    {
        NoGradGuard ng;
        Tensor m = rm.clone(), v = rv.clone();
        z = values(batch_norm(x, w, b, m, v, args));  // pre-activation (act none)
    }
    for (size_t i = 0; i < d.size(); ++i)  // no gradient where the f32 and double activation masks could disagree
        if (std::fabs(z[i]) < 1e-3 || std::fabs(z[i] - 6) < 1e-3) d[i] = 0;
    const Tensor dy = from_vector(d, shape).to(DType::f32);
    args.act = act;
    calls = 0;
    Tensor xc = x.clone().requires_grad_(), wc = w.clone().requires_grad_(), bc = b.clone().requires_grad_();
    Tensor y = batch_norm(xc, wc, bc, rm, rv, args);
    y.backward(dy);
    CHECK(calls == (training ? 3 : 0));
    calls = 0;
    Tensor xg = x.to(dt).to(g).requires_grad_(), wg = w.to(g).requires_grad_(), bg = b.to(g).requires_grad_();
    Tensor yg = batch_norm(xg, wg, bg, rm_g, rv_g, args);
    yg.backward(dy.to(dt).to(g));
    CHECK(calls == (training ? 3 : 0));
    expect_close(yg.to(cpu), y, tol, what + " y");
    expect_close(xg.grad().to(cpu), xc.grad(), tol, what + " dx");
    expect_close(wg.grad().to(cpu), wc.grad(), tol, what + " dweight");
    expect_close(bg.grad().to(cpu), bc.grad(), tol, what + " dbias");
    expect_close(rm_g.to(cpu), rm, tol_gpu_f32(), what + " running_mean");
    expect_close(rv_g.to(cpu), rv, tol_gpu_f32(), what + " running_var");
}
}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("GPU forward, backward and running statistics match the CPU (f32, bf16; train and eval)") {
        uint64_t seed = 900;
        for (DType dt : {DType::f32, DType::bf16})
            for (const Shape& shape : {Shape{64, 4096}, Shape{4, 14, 14, 96}, Shape{3, 5, 7, 33}})
                for (Activation act : kActs)
                    for (bool training : {true, false}) gpu_case(dt, shape, act, training, seed += 10);
    }
}
