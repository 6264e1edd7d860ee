// SSL losses and the EMA update (ssl/losses.h): DINO and SwAV losses against per-pair engine-op formulas (value,
// teacher mean, gradient) with both λ weightings, 0-2 locals and 1-2 globals, finite-difference gradients in
// double; Sinkhorn against a literal SwAV loop, its marginals, the all-reduce hook (sizes, and two threads as two
// ranks equal one process); InfoNCE against concat + matmul + cross_entropy; EMA on more tensors than one launch
// takes; error paths. Emulated kernels (f32, bf16; K = 7, 300, 3000, 4096, 4200; several chunks per row and
// sample groups) against the CPU reference; the ops on the GPU against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "kernels/dino_loss.h"
#include "kernels/ema.h"
#include "kernels/infonce.h"
#include "kernels/swav.h"
#include "ssl/losses.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

size_t sz(int64_t n) { return static_cast<size_t>(n); }

Tensor rows(const Tensor& t, int64_t i, int64_t B) { return t.slice(i * B, (i + 1) * B); }

// λ_gg·mean over gg pairs + λ_gl·mean over gl pairs of batch-mean −Σ P^i log softmax(s_v/τ), with engine ops.
Tensor pair_loss_direct(const Tensor& s, const std::vector<Tensor>& P, double temp, double lgg, double lgl) {
    const int64_t G = int64_t(P.size()), B = P[0].size(0), V = s.size(0) / B;
    Tensor gg = zeros({}, s.dtype()), gl = zeros({}, s.dtype());
    for (int64_t v = 0; v < V; ++v) {
        Tensor logp = log_softmax(rows(s, v, B) / temp);
        for (int64_t i = 0; i < G; ++i) {
            if (i == v) continue;
            Tensor h = mean(neg(sum(P[sz(i)] * logp, 1)));
            (v < G ? gg : gl) = (v < G ? gg : gl) + h;
        }
    }
    const double n_gg = double(G * (G - 1)), n_gl = double(G * (V - G));
    Tensor L = zeros({}, s.dtype());
    if (n_gg > 0) L = L + gg * (lgg / n_gg);
    if (n_gl > 0) L = L + gl * (lgl / n_gl);
    return L;
}

std::vector<Tensor> dino_targets(const Tensor& t, const Tensor& c, double tt, int G) {
    std::vector<Tensor> P;
    for (int i = 0; i < G; ++i) P.push_back(softmax(sub(rows(t, i, t.size(0) / G), c) / tt));
    return P;
}

// Codes-like targets: positive rows summing to 1.
Tensor random_codes(int64_t B, int64_t K, uint64_t seed, DType dt = DType::f64) {
    return softmax(random_tensor({B, K}, seed, DType::f64, -2, 2)).to(dt);
}

ssl::DinoLossArgs dino_args(double lgg, double lgl, int G = 2) {
    ssl::DinoLossArgs a;
    a.teacher_temp = 0.04;
    a.lambda_gg = lgg, a.lambda_gl = lgl, a.n_global = G;
    return a;
}

// SwAV's distributed_sinkhorn for one process, literally, with Q as K × B (double).
std::vector<double> sinkhorn_direct(const std::vector<double>& s, int64_t B, int64_t K, double eps, int iters) {
    std::vector<double> Q(sz(K * B));
    double total = 0;
    for (int64_t k = 0; k < K; ++k)
        for (int64_t b = 0; b < B; ++b) total += Q[k * B + b] = std::exp(s[b * K + k] / eps);
    for (double& x : Q) x /= total;
    for (int it = 0; it < iters; ++it) {
        for (int64_t k = 0; k < K; ++k) {
            double r = 0;
            for (int64_t b = 0; b < B; ++b) r += Q[k * B + b];
            for (int64_t b = 0; b < B; ++b) Q[k * B + b] = Q[k * B + b] / r / double(K);
        }
        for (int64_t b = 0; b < B; ++b) {
            double c = 0;
            for (int64_t k = 0; k < K; ++k) c += Q[k * B + b];
            for (int64_t k = 0; k < K; ++k) Q[k * B + b] = Q[k * B + b] / c / double(B);
        }
    }
    std::vector<double> out(sz(B * K));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < K; ++k) out[b * K + k] = Q[k * B + b] * double(B);
    return out;
}

// Sums tensors of two threads ("ranks") in place, with a barrier on each side of the exchange.
class TwoRankReduce {
public:
    void operator()(int rank, Tensor& t) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            part_[rank] = t.to_vector<double>();
        }
        barrier();
        std::vector<double> sum = part_[0];
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += part_[1][i];
        double* d = t.data<double>();
        for (size_t i = 0; i < sum.size(); ++i) d[i] = sum[i];
        barrier();
    }

private:
    void barrier() {
        std::unique_lock<std::mutex> lock(mu_);
        const int gen = gen_;
        if (++arrived_ == 2) {
            arrived_ = 0, ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return gen_ != gen; });
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    int arrived_ = 0, gen_ = 0;
    std::vector<double> part_[2];
};

Tensor infonce_direct(const Tensor& q, const Tensor& k, const Tensor& queue, double temp) {
    Tensor logits = concat({sum(q * k, 1, true), matmul(q, queue, false, true)}, -1) / temp;
    return cross_entropy(logits, zeros({q.size(0)}, DType::i64));
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("dino_loss equals the per-pair formula; teacher_mean; gradient equals the engine ops' gradient") {
        struct Case {
            int64_t B, K;
            int G, locals;
            double lgg, lgl;
        };
        for (const Case& c :
             {Case{3, 7, 2, 2, 0.4, 0.6}, Case{3, 7, 2, 2, 0.9, 0.1}, Case{5, 300, 2, 6, 1. / 7, 6. / 7},
              Case{4, 33, 2, 0, 0.5, 0.5}, Case{3, 17, 1, 3, 0.3, 0.7}}) {
            INFO("B ", c.B, " K ", c.K, " G ", c.G, " locals ", c.locals, " lambda ", c.lgg, "/", c.lgl);
            const int64_t V = c.G + c.locals;
            Tensor s = random_tensor({V * c.B, c.K}, 1, DType::f64, -2, 2).requires_grad_();
            Tensor t = random_tensor({c.G * c.B, c.K}, 2, DType::f64, -0.2, 0.2);
            Tensor cen = random_tensor({c.K}, 3, DType::f64, -0.05, 0.05);
            ssl::DinoLossResult r = ssl::dino_loss(s, t, cen, dino_args(c.lgg, c.lgl, c.G));
            Tensor s2 = s.detach().requires_grad_();
            Tensor ref = pair_loss_direct(s2, dino_targets(t, cen, 0.04, c.G), 0.1, c.lgg, c.lgl);
            expect_close(r.loss, ref, tol_for(DType::f64), "dino loss");
            expect_close(r.teacher_mean, mean(t, 0), tol_for(DType::f64), "teacher mean");
            r.loss.backward();
            ref.backward();
            expect_close(s.grad(), s2.grad(), tol_for(DType::f64), "dino gradient");
            // f32 against the f64 result
            ssl::DinoLossResult r32 = ssl::dino_loss(s.detach().to(DType::f32), t.to(DType::f32), cen.to(DType::f32),
                                                     dino_args(c.lgg, c.lgl, c.G));
            CHECK(r32.loss.item() == doctest::Approx(ref.item()).epsilon(1e-5));
        }
    }

    TEST_CASE("dino_loss and swav_loss finite-difference gradients (K 7, B 3, 2 globals + 2 locals, both λ)") {
        Tensor t = random_tensor({6, 7}, 5, DType::f64, -0.3, 0.3), cen = random_tensor({7}, 6, DType::f64, -0.1, 0.1);
        std::vector<Tensor> codes = {random_codes(3, 7, 7), random_codes(3, 7, 8)};
        for (auto [lgg, lgl] : {std::pair{0.4, 0.6}, std::pair{0.8, 0.2}}) {
            gradcheck(
                [&](const std::vector<Tensor>& in) { return ssl::dino_loss(in[0], t, cen, dino_args(lgg, lgl)).loss; },
                {random_tensor({12, 7}, 9, DType::f64, -2, 2).requires_grad_()}, "dino_loss");
            gradcheck([&](const std::vector<Tensor>& in) { return ssl::swav_loss(in[0], codes, lgg, lgl); },
                      {random_tensor({12, 7}, 10, DType::f64, -1, 1).requires_grad_()}, "swav_loss");
        }
    }

    TEST_CASE("swav_loss equals the per-pair formula with codes as targets") {
        for (int locals : {0, 2, 6}) {
            const int64_t B = 5, K = 31;
            Tensor s = random_tensor({(2 + locals) * B, K}, 11, DType::f64, -1, 1).requires_grad_();
            std::vector<Tensor> codes = {random_codes(B, K, 12),
                                         random_codes(B, K, 13) * 0.9};  // rows need not sum to 1
            Tensor L = ssl::swav_loss(s, codes, 0.4, 0.6);
            Tensor s2 = s.detach().requires_grad_();
            Tensor ref = pair_loss_direct(s2, codes, 0.1, 0.4, 0.6);
            expect_close(L, ref, tol_for(DType::f64), "swav loss");
            L.backward();
            ref.backward();
            expect_close(s.grad(), s2.grad(), tol_for(DType::f64), "swav gradient");
        }
    }

    TEST_CASE("sinkhorn equals SwAV's loop; codes rows sum to 1, prototype marginals converge to B/K") {
        for (auto [B, K] : {std::pair<int64_t, int64_t>{37, 300}, {12, 7}, {130, 64}}) {
            std::vector<double> sv = random_vector<double>(sz(B * K), 21, -1, 1);
            Tensor s = from_vector(sv, {B, K});
            expect_close(ssl::sinkhorn(s).to_vector<double>(), sinkhorn_direct(sv, B, K, 0.05, 3), tol_for(DType::f64),
                         "sinkhorn f64");
            expect_close(ssl::sinkhorn(s.to(DType::f32)).to_vector<float>(), sinkhorn_direct(sv, B, K, 0.05, 3),
                         Tol{1e-6, 1e-4}, "sinkhorn f32");
            std::vector<double> q = ssl::sinkhorn(s, 0.05, 200).to_vector<double>();
            for (int64_t b = 0; b < B; ++b) {
                double r = 0;
                for (int64_t k = 0; k < K; ++k) r += q[b * K + k];
                CHECK(r == doctest::Approx(1.0).epsilon(1e-12));
            }
            for (int64_t k = 0; k < K; ++k) {
                double c = 0;
                for (int64_t b = 0; b < B; ++b) c += q[b * K + k];
                CHECK(c == doctest::Approx(double(B) / double(K)).epsilon(1e-3));
            }
        }
    }

    TEST_CASE("sinkhorn all_reduce hook: one scalar then one K-vector per iteration; two ranks equal one process") {
        const int64_t B = 10, K = 13;
        Tensor s = random_tensor({B, K}, 31, DType::f64, -1, 1);
        std::vector<Shape> seen;
        ssl::sinkhorn(s, 0.05, 3, [&](Tensor& t) { seen.push_back(t.shape()); });
        CHECK(seen == std::vector<Shape>{Shape{}, Shape{K}, Shape{K}, Shape{K}});
        TwoRankReduce reduce;
        Tensor out[2];
        std::thread ranks[2];
        const int64_t split[3] = {0, 4, B};  // unequal rank batches
        for (int r = 0; r < 2; ++r)
            ranks[r] = std::thread([&, r] {
                out[r] = ssl::sinkhorn(
                    s.slice(split[r], split[r + 1]), 0.05, 3, [&](Tensor& t) { reduce(r, t); }, B);
            });
        for (auto& th : ranks) th.join();
        expect_close(concat({out[0], out[1]}, 0), ssl::sinkhorn(s), tol_for(DType::f64), "two ranks");
    }

    TEST_CASE("infonce_loss equals concat + matmul + cross_entropy; gradient w.r.t. q") {
        for (double temp : {0.2, 0.07}) {
            Tensor q = l2_normalize(random_tensor({9, 16}, 41, DType::f64)).detach().requires_grad_();
            Tensor k = l2_normalize(random_tensor({9, 16}, 42, DType::f64));
            Tensor queue = l2_normalize(random_tensor({301, 16}, 43, DType::f64));
            Tensor L = ssl::infonce_loss(q, k, queue, temp);
            Tensor q2 = q.detach().requires_grad_();
            Tensor ref = infonce_direct(q2, k, queue, temp);
            expect_close(L, ref, tol_for(DType::f64), "infonce loss");
            L.backward();
            ref.backward();
            expect_close(q.grad(), q2.grad(), tol_for(DType::f64), "infonce dq");
            CHECK(ssl::infonce_loss(q.detach().to(DType::f32), k.to(DType::f32), queue.to(DType::f32), temp).item() ==
                  doctest::Approx(ref.item()).epsilon(1e-5));
        }
        Tensor k = random_tensor({3, 5}, 44, DType::f64), queue = random_tensor({7, 5}, 45, DType::f64);
        gradcheck([&](const std::vector<Tensor>& in) { return ssl::infonce_loss(in[0], k, queue, 0.2); },
                  {random_tensor({3, 5}, 46, DType::f64).requires_grad_()}, "infonce_loss");
    }

    TEST_CASE("ema_update over 170 tensors of odd sizes equals the formula; m = 1 keeps, m = 0 copies") {
        for (DType dt : {DType::f32, DType::f64}) {
            std::vector<Tensor> t, s;
            std::vector<Tensor*> tp, sp;
            for (int i = 0; i < 170; ++i) {
                const int64_t n = 1 + (i * 7919) % 9001 + (i == 3 ? 20000 : 0);
                t.push_back(random_tensor({n}, 100 + i, dt));
                s.push_back(random_tensor({n}, 500 + i, dt));
            }
            for (int i = 0; i < 170; ++i) tp.push_back(&t[i]), sp.push_back(&s[i]);
            std::vector<std::vector<double>> before;
            for (auto& x : t) before.push_back(x.to_vector<double>());
            ssl::ema_update(tp, sp, 0.996);
            for (int i = 0; i < 170; i += 13) {
                std::vector<double> want = before[i], sv = s[i].to_vector<double>();
                for (size_t j = 0; j < want.size(); ++j) want[j] = 0.996 * want[j] + 0.004 * sv[j];
                expect_close(t[i].to_vector<double>(), want, tol_for(dt), "ema tensor " + std::to_string(i));
            }
            std::vector<double> kept = t[7].to_vector<double>();
            ssl::ema_update(tp, sp, 1.0);
            CHECK(t[7].to_vector<double>() == kept);
            ssl::ema_update(tp, sp, 0.0);
            CHECK(t[7].to_vector<double>() == s[7].to_vector<double>());
        }
    }

    TEST_CASE("error paths name shapes, dtypes and grad misuse") {
        Tensor s = random_tensor({12, 7}, 1), t = random_tensor({6, 7}, 2), c = random_tensor({7}, 3);
        auto args = dino_args(0.4, 0.6);
        CHECK(error_of([&] {
                  ssl::dino_loss(s, random_tensor({6, 8}, 2), c, args);
              }).find("[6, 8]") != std::string::npos);
        CHECK_THROWS_AS(ssl::dino_loss(s, random_tensor({5, 7}, 2), c, args), ShapeError);
        CHECK_THROWS_AS(ssl::dino_loss(s, t, random_tensor({8}, 3), args), ShapeError);
        CHECK_THROWS_AS(ssl::dino_loss(s, t.to(DType::f64), c, args), DTypeError);
        CHECK_THROWS_AS(ssl::dino_loss(s, t.detach().requires_grad_(), c, args), AutogradError);
        ssl::DinoLossArgs unset;
        CHECK(error_of([&] { ssl::dino_loss(s, t, c, unset); }).find("teacher_temp") != std::string::npos);
        CHECK_THROWS_AS(
            ssl::swav_loss(s, {random_codes(3, 7, 1, DType::f32), random_codes(2, 7, 2, DType::f32)}, .4, .6),
            ShapeError);
        CHECK_THROWS_AS(ssl::swav_loss(s, {}, 0.4, 0.6), Error);
        CHECK_THROWS_AS(ssl::sinkhorn(s.detach().requires_grad_()), AutogradError);
        CHECK(error_of([&] { ssl::sinkhorn(s, 0.05, 3, [](Tensor& x) { x = x.clone(); }); }).find("in place") !=
              std::string::npos);
        CHECK_THROWS_AS(ssl::infonce_loss(s, s, random_tensor({9, 6}, 4)), ShapeError);
        CHECK_THROWS_AS(ssl::infonce_loss(s, s.detach().requires_grad_(), s), AutogradError);
        Tensor a = random_tensor({4}, 5), b = random_tensor({5}, 6);
        CHECK_THROWS_AS(ssl::ema_update({&a}, {&b}, 0.9), ShapeError);
        CHECK_THROWS_AS(ssl::ema_update({&a}, {&a, &b}, 0.9), Error);
        CHECK_THROWS_AS(ssl::ema_update({&a}, {&a}, 1.5), Error);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class S>
std::vector<S> as(const std::vector<float>& v) {
    std::vector<S> out;
    for (float x : v) out.push_back(S(x));
    return out;
}
// Emulated forward + backward in storage type S against the CPU reference on the same S-rounded inputs.
template <class S>
void dino_emu_vs_cpu(int64_t B, int64_t K, int V, int G, bool softmax, uint64_t seed) {
    INFO("B ", B, " K ", K, " V ", V, " G ", G, softmax ? " DINO " : " SwAV ", sizeof(S) == 2 ? "bf16" : "f32");
    kernels::DinoLossParams p;
    p.B = B, p.K = K, p.views = V, p.n_global = G, p.softmax_targets = softmax, p.teacher_temp = 0.04;
    kernels::dino_set_lambdas(p, 0.4, 0.6);
    const std::vector<float> s = to_float(as<S>(random_vector<float>(sz(V * B * K), seed, -3, 3)));
    const std::vector<float> t =
        to_float(as<S>(softmax ? random_vector<float>(sz(G * B * K), seed + 1, -0.3, 0.3)
                               : random_codes(G * B, K, seed + 1, DType::f32).to_vector<float>()));
    const std::vector<float> cen = random_vector<float>(sz(K), seed + 2, -0.05, 0.05), g = {1.75f};
    float loss = 0;
    std::vector<float> lse(sz(V * B)), tst(sz(G * B)), tmean(sz(K)), ds(s.size());
    kernels::dino_loss_fwd_cpu(p, s.data(), t.data(), cen.data(), &loss, lse.data(), tst.data(), tmean.data());
    kernels::dino_loss_bwd_cpu(p, s.data(), t.data(), cen.data(), lse.data(), tst.data(), g.data(), ds.data());

    emu::Buffer<S> d_s(as<S>(s)), d_t(as<S>(t)), d_loss(1), d_g(as<S>(g)), d_ds(s.size());
    emu::Buffer<float> d_c(cen), d_lse(lse.size()), d_tst(tst.size()), d_mean(sz(K));
    emu::Buffer<float> ws(kernels::emu::dino_loss_workspace(p));
    kernels::emu::dino_loss_fwd(p, d_s.data(), d_t.data(), softmax ? d_c.data() : nullptr, d_loss.data(), d_lse.data(),
                                d_tst.data(), softmax ? d_mean.data() : nullptr, ws.data(), nullptr);
    kernels::emu::dino_loss_bwd(p, d_s.data(), d_t.data(), softmax ? d_c.data() : nullptr, d_lse.data(), d_tst.data(),
                                d_g.data(), d_ds.data(), nullptr);
    const Tol out_tol = sizeof(S) == 2 ? tol_for(DType::bf16) : tol_emu_f32();
    expect_close(to_float(d_loss.to_vector()), std::vector<float>{loss}, out_tol, "loss");
    expect_close(d_lse.to_vector(), lse, tol_emu_f32(), "student lse");
    expect_close(d_tst.to_vector(), tst, tol_emu_f32(), "target stats");
    if (softmax) expect_close(d_mean.to_vector(), tmean, tol_emu_f32(), "teacher mean");
    expect_close(to_float(d_ds.to_vector()), ds, sizeof(S) == 2 ? tol_for(DType::bf16) : Tol{1e-7, 2e-4}, "dstudent");
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("DINO / SwAV loss kernels emulated vs CPU: K 7, 300, 3000, 4096, 4200; chunks and sample groups") {
        dino_emu_vs_cpu<float>(3, 7, 4, 2, true, 1);
        dino_emu_vs_cpu<float>(3, 300, 5, 2, true, 2);
        dino_emu_vs_cpu<float>(4, 4096, 4, 2, true, 3);  // two chunks per row
        dino_emu_vs_cpu<float>(2, 777, 3, 1, true, 4);
        dino_emu_vs_cpu<float>(3, 3000, 8, 2, false, 5);   // SwAV: 2 + 6 crops
        dino_emu_vs_cpu<float>(701, 4200, 3, 2, true, 6);  // 3 chunks, 2 samples per stats block, a lone last group
        dino_emu_vs_cpu<bf16>(2, 2100, 4, 2, true, 7);
        dino_emu_vs_cpu<bf16>(3, 300, 4, 2, false, 8);
    }

    TEST_CASE("Sinkhorn kernels emulated vs CPU (shifted single process; unshifted with a hook and 2 ranks' B)") {
        for (auto [B, K, shift] :
             {std::tuple<int64_t, int64_t, bool>{37, 300, true}, {130, 3000, false}, {5, 7, true}}) {
            INFO("B ", B, " K ", K);
            kernels::SinkhornParams p;
            p.B = B, p.K = K, p.shift_max = shift, p.global_rows = shift ? 0.0 : double(2 * B);
            const std::vector<float> s = random_vector<float>(sz(B * K), 51, -1, 1);
            std::vector<float> q(s.size()), tot(1), proto(sz(K));
            int calls = 0;
            kernels::sinkhorn_cpu(p, s.data(), q.data(), tot.data(), proto.data(), [&](int64_t) { ++calls; });
            emu::Buffer<float> d_s(s), d_q(s.size()), d_tot(1), d_proto(sz(K)), ws(kernels::emu::sinkhorn_workspace(p));
            std::vector<int64_t> sizes;
            kernels::emu::sinkhorn(
                p, d_s.data(), d_q.data(), d_tot.data(), d_proto.data(), ws.data(),
                [&](int64_t n) { sizes.push_back(n); }, nullptr);
            CHECK(sizes == std::vector<int64_t>{1, K, K, K});
            CHECK(calls == 4);
            expect_close(d_q.to_vector(), q, Tol{1e-9, 2e-4}, "codes");
            expect_close(d_tot.to_vector(), tot, Tol{0, 1e-5}, "total");
        }
    }

    TEST_CASE("InfoNCE kernels emulated vs CPU (queue 7 and 5000)") {
        for (auto [B, D, Kq] : {std::tuple<int64_t, int64_t, int64_t>{3, 5, 7}, {9, 16, 5000}}) {
            kernels::InfoNceParams p;
            p.B = B, p.D = D, p.Kq = Kq;
            const std::vector<float> q = random_vector<float>(sz(B * D), 61), k = random_vector<float>(sz(B * D), 62);
            const std::vector<float> dots = random_vector<float>(sz(B * Kq), 63, -0.5, 0.5), g = {0.8f};
            std::vector<float> lpos(sz(B)), lse(sz(B)), logits = dots, dq(sz(B * D));
            float loss = 0;
            kernels::infonce_fwd_cpu(p, q.data(), k.data(), dots.data(), lpos.data(), lse.data(), &loss);
            kernels::infonce_bwd_cpu(p, k.data(), lpos.data(), lse.data(), g.data(), logits.data(), dq.data());
            emu::Buffer<float> d_q(q), d_k(k), d_l(dots), d_lpos(sz(B)), d_lse(sz(B)), d_row(sz(B));
            emu::Buffer<float> d_loss(1), d_g(g), d_dq(sz(B * D));
            kernels::emu::infonce_fwd(p, d_q.data(), d_k.data(), d_l.data(), d_lpos.data(), d_lse.data(), d_row.data(),
                                      d_loss.data(), nullptr);
            kernels::emu::infonce_bwd(p, d_k.data(), d_lpos.data(), d_lse.data(), d_g.data(), d_l.data(), d_dq.data(),
                                      nullptr);
            expect_close(d_loss.to_vector(), std::vector<float>{loss}, tol_emu_f32(), "loss");
            expect_close(d_lse.to_vector(), lse, tol_emu_f32(), "lse");
            expect_close(d_l.to_vector(), logits, Tol{1e-9, 2e-4}, "softmax operand");
            expect_close(d_dq.to_vector(), dq, Tol{1e-7, 2e-4}, "dq positive term");
        }
    }

    TEST_CASE("EMA kernel emulated vs CPU: 170 tensors (two launches), odd sizes, misaligned, one over a chunk") {
        std::vector<int64_t> n;
        for (int i = 0; i < 170; ++i) n.push_back(1 + (i * 7919) % 3001 + (i == 5 ? 20000 : 0));
        int64_t total = 0;
        for (int64_t v : n) total += v + 1;
        std::vector<float> t = random_vector<float>(sz(total), 71), s = random_vector<float>(sz(total), 72);
        emu::Buffer<float> d_t(t), d_s(s);
        std::vector<kernels::EmaSlot<float>> host, dev;
        int64_t off = 0;
        for (size_t i = 0; i < n.size(); ++i, off += n[i - 1] + 1) {  // +1: every other tensor starts misaligned
            host.push_back({t.data() + off, s.data() + off, n[i]});
            dev.push_back({d_t.data() + off, d_s.data() + off, n[i]});
        }
        kernels::ema_update_cpu(host, 0.9);
        kernels::emu::ema_update(dev, 0.9, nullptr);
        expect_close(d_t.to_vector(), t, Tol{1e-7, 1e-6}, "ema");
    }
}
#endif

TEST_SUITE("gpu") {
    // The op on cuda:0 in `dt` against the op on the CPU in f32 on the same dt-rounded inputs; `f` returns the
    // outputs to compare, the first of which is a scalar loss whose gradient w.r.t. x is compared too.
    using OpFn = std::function<std::vector<Tensor>(const Tensor& x, const std::vector<Tensor>& consts)>;
    void gpu_vs_cpu(const OpFn& f, const Tensor& x32, const std::vector<Tensor>& consts, DType dt,
                    const std::string& what) {
        const Device g = Device::cuda(0);
        const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
        auto round = [&](const Tensor& t) { return t.dtype() == DType::f32 ? t.to(dt).to(DType::f32) : t; };
        Tensor xc = round(x32).detach().requires_grad_(), xg = round(x32).to(dt).to(g).detach().requires_grad_();
        std::vector<Tensor> cc, cg;
        for (const Tensor& c : consts) cc.push_back(round(c)), cg.push_back(round(c).to(dt).to(g));
        std::vector<Tensor> yc = f(xc, cc), yg = f(xg, cg);
        for (size_t i = 0; i < yc.size(); ++i)
            expect_close(yg[i].to(Device::cpu()).to(DType::f32), yc[i], tol, what + " output " + std::to_string(i));
        yc[0].backward();
        yg[0].backward();
        expect_close(xg.grad().to(Device::cpu()).to(DType::f32), xc.grad(), tol, what + " gradient");
    }

    TEST_CASE("DINO, SwAV, Sinkhorn, InfoNCE and EMA on the GPU match the CPU (f32, bf16; paper shapes)") {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (auto [B, K, V] : {std::tuple<int64_t, int64_t, int64_t>{32, 4096, 8}, {4, 65536, 12}, {5, 300, 4}}) {
                Tensor t = random_tensor({2 * B, K}, 2, DType::f32, -0.5, 0.5),
                       c = random_tensor({K}, 3, DType::f32, -0.1, 0.1);
                gpu_vs_cpu(
                    [&](const Tensor& s, const std::vector<Tensor>& k) {
                        Tensor cen = c.to(s.device());  // f32 on both devices
                        auto r = ssl::dino_loss(s, k[0], cen, dino_args(0.4, 0.6));
                        return std::vector<Tensor>{r.loss, r.teacher_mean};
                    },
                    random_tensor({V * B, K}, 1, DType::f32, -3, 3), {t}, dt, str("dino ", dtype_name(dt), " K ", K));
            }
            Tensor codes = ssl::sinkhorn(random_tensor({64, 3000}, 4, DType::f32));
            gpu_vs_cpu(
                [&](const Tensor& s, const std::vector<Tensor>& k) {
                    return std::vector<Tensor>{ssl::swav_loss(s, {rows(k[0], 0, 32), rows(k[0], 1, 32)}, 0.4, 0.6)};
                },
                random_tensor({8 * 32, 3000}, 5, DType::f32), {codes}, dt, str("swav ", dtype_name(dt)));
            Tensor sc = random_tensor({3968, 3000}, 6, DType::f32);
            const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : Tol{1e-7, 1e-3};
            expect_close(ssl::sinkhorn(sc.to(dt).to(Device::cuda(0))).to(Device::cpu()).to(DType::f32),
                         ssl::sinkhorn(sc.to(dt).to(DType::f32)), tol, "sinkhorn");
            Tensor k = l2_normalize(random_tensor({256, 128}, 7)), queue = l2_normalize(random_tensor({16384, 128}, 8));
            gpu_vs_cpu(
                [](const Tensor& q, const std::vector<Tensor>& c) {
                    return std::vector<Tensor>{ssl::infonce_loss(q, c[0], c[1], 0.2)};
                },
                l2_normalize(random_tensor({256, 128}, 9)), {k, queue}, dt, str("infonce ", dtype_name(dt)));
        }
        std::vector<Tensor> tc, sc, tg, sg;
        std::vector<Tensor*> ptc, psc, ptg, psg;
        for (int i = 0; i < 170; ++i) {
            const int64_t n = 1 + (i * 7919) % 9001 + (i == 3 ? 200000 : 0);
            tc.push_back(random_tensor({n}, 100 + i)), sc.push_back(random_tensor({n}, 500 + i));
            tg.push_back(tc.back().to(Device::cuda(0))), sg.push_back(sc.back().to(Device::cuda(0)));
        }
        for (int i = 0; i < 170; ++i)
            ptc.push_back(&tc[i]), psc.push_back(&sc[i]), ptg.push_back(&tg[i]), psg.push_back(&sg[i]);
        ssl::ema_update(ptc, psc, 0.996);
        ssl::ema_update(ptg, psg, 0.996);
        for (int i = 0; i < 170; ++i)
            expect_close(tg[i].to(Device::cpu()), tc[i], Tol{1e-7, 1e-6}, "ema " + std::to_string(i));
    }
}
