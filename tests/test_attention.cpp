// attention / attention_qkv: hand-computed values, finite-difference gradients in double at odd sizes, forward and
// gradients against the unfused softmax(q kᵀ s) v built from the engine's matmul and softmax ops (ViT shapes),
// the fused layout against explicit permutes, large scores, needs-grad masks and error paths; the attention.cu
// kernels through the SIMT emulator against the CPU reference (f32, bf16, both layouts, T off the tiles, D 8-128);
// and the ops on the GPU against the CPU at the ViT shapes, f32 and bf16, forward and backward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/ops/attention.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "kernels/attention.h"
#include "tests/compare.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

// softmax(q kᵀ scale) v through the engine's generic ops (differentiable): the unfused reference path.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
    return matmul(softmax(mul(matmul(q, k, false, true), scale)), v);
}

// [B, T, 3 H D] -> q, k, v as [B, H, T, D] via explicit permutes (differentiable).
std::vector<Tensor> split_qkv(const Tensor& qkv, int64_t H) {
    const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (3 * H);
    Tensor x = permute(qkv.reshape({B, T, 3, H, D}), {2, 0, 3, 1, 4});  // [3, B, H, T, D]
    return {x.slice(0, 1).reshape({B, H, T, D}), x.slice(1, 2).reshape({B, H, T, D}),
            x.slice(2, 3).reshape({B, H, T, D})};
}
// [B, H, T, D] -> [B, T, H D].
Tensor merge_heads(const Tensor& y) {
    return permute(y, {0, 2, 1, 3}).reshape({y.size(0), y.size(2), y.size(1) * y.size(3)});
}

std::string name_of(const Shape& s, double scale) { return shape_str(s) + " scale " + std::to_string(scale); }

// Forward and all three gradients of the fused op against the unfused path on the same inputs.
void check_vs_naive(const Shape& s, DType dt, double scale, uint64_t seed, double lo = -1, double hi = 1,
                    Tol tol = {0, 0}) {
    if (tol.atol == 0) tol = tol_for(dt);
    Tensor in[3], ref[3];
    for (int i = 0; i < 3; ++i) {
        Tensor x = random_tensor(s, seed + i, dt, lo, hi);
        in[i] = x.clone().requires_grad_();
        ref[i] = x.to(DType::f64).requires_grad_();
    }
    const double sc = scale == 0 ? 1 / std::sqrt(double(s[3])) : scale;
    Tensor y = attention(in[0], in[1], in[2], scale), yr = naive_attention(ref[0], ref[1], ref[2], sc);
    const std::string what = std::string(dtype_name(dt)) + " " + name_of(s, scale);
    expect_close(y, yr, tol, "forward vs matmul+softmax " + what);
    Tensor g = random_tensor(s, seed + 5, DType::f64);
    y.backward(g.to(dt));
    yr.backward(g);
    for (int i = 0; i < 3; ++i)
        expect_close(in[i].grad(), ref[i].grad(), tol, "d" + std::string("qkv").substr(i, 1) + " vs unfused " + what);
}

template <class E, class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
    try {
        fn();
        FAIL("expected an exception");
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, msg, " lacks '", p, "'");
    }
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("hand-computed values: two tokens, scale 1") {
        // Row 0 scores (0, 0) -> p = (1/2, 1/2); row 1 scores (0, ln 3) -> p = (1/4, 3/4).
        const double l3 = std::log(3.0);
        Tensor q = from_vector(std::vector<double>{0, 0, 1, 0}, {1, 1, 2, 2});
        Tensor k = from_vector(std::vector<double>{0, 7, l3, 0}, {1, 1, 2, 2});
        Tensor v = from_vector(std::vector<double>{1, 2, 5, 6}, {1, 1, 2, 2});
        Tensor y = attention(q, k, v, 1.0);
        expect_close(y.to_vector<double>(), std::vector<double>{3, 4, 4, 5}, tol_for(DType::f64), "hand values");
        // Default scale 1/sqrt(D): the same as passing it explicitly.
        expect_close(attention(q, k, v), attention(q, k, v, 1 / std::sqrt(2.0)), tol_for(DType::f64), "scale 0");
    }

    TEST_CASE("finite-difference gradients of attention: heads 3, T 5 and 7, D 4 and 8, two scales") {
        uint64_t seed = 10;
        for (int64_t T : {5, 7})
            for (int64_t D : {4, 8}) {
                const Shape s{2, 3, T, D};
                for (double scale : {0.0, 0.7}) {
                    std::vector<Tensor> in;
                    for (int i = 0; i < 3; ++i) in.push_back(random_tensor(s, seed++, DType::f64).requires_grad_());
                    gradcheck([scale](const std::vector<Tensor>& t) { return attention(t[0], t[1], t[2], scale); },
                              in, "attention " + name_of(s, scale), seed++);
                }
            }
    }

    TEST_CASE("finite-difference gradients of attention_qkv: heads 3, T 5 and 7, D 4 and 8") {
        uint64_t seed = 50;
        for (int64_t T : {5, 7})
            for (int64_t D : {4, 8}) {
                const Shape s{2, T, 3 * 3 * D};
                std::vector<Tensor> in{random_tensor(s, seed++, DType::f64, -2, 2).requires_grad_()};
                gradcheck([](const std::vector<Tensor>& t) { return attention_qkv(t[0], 3); }, in,
                          "attention_qkv " + shape_str(s), seed++);
            }
    }

    TEST_CASE("forward and gradients equal the unfused matmul + softmax + matmul path (ViT shapes, D = 64)") {
        uint64_t seed = 100;
        for (int64_t T : {37, 65}) {
            check_vs_naive({2, 3, T, 64}, DType::f64, 0, seed += 10);
            check_vs_naive({2, 3, T, 64}, DType::f32, 0, seed += 10);
        }
        check_vs_naive({1, 2, 197, 64}, DType::f32, 0, seed += 10);
        check_vs_naive({3, 1, 9, 32}, DType::f32, 0.3, seed += 10);
    }

    TEST_CASE("attention_qkv equals attention on explicitly permuted q, k, v, forward and d(qkv)") {
        uint64_t seed = 200;
        for (int64_t H : {1, 3})
            for (int64_t T : {5, 37}) {
                const int64_t B = 2, D = 16;
                Tensor x = random_tensor({B, T, 3 * H * D}, seed++, DType::f64);
                Tensor a = x.clone().requires_grad_(), b = x.clone().requires_grad_();
                Tensor ya = attention_qkv(a, int(H), 0.4);
                std::vector<Tensor> qkv = split_qkv(b, H);
                Tensor yb = merge_heads(attention(qkv[0], qkv[1], qkv[2], 0.4));
                REQUIRE(ya.shape() == Shape{B, T, H * D});
                const std::string what = "fused vs permuted " + shape_str(x.shape());
                expect_close(ya, yb, tol_for(DType::f64), what);
                Tensor g = random_tensor(ya.shape(), seed++, DType::f64);
                ya.backward(g);
                yb.backward(g);
                expect_close(a.grad(), b.grad(), tol_for(DType::f64), what + " d(qkv)");
            }
    }

    TEST_CASE("large scores (scale |q·k| ~ 50) stay finite and accurate") {
        // q, k in [-3, 3] with D = 64 and scale 1: scores have a spread of about +-50 around 0.
        check_vs_naive({1, 2, 37, 64}, DType::f32, 1.0, 300, -3, 3, {1e-4, 1e-3});
        check_vs_naive({1, 1, 65, 64}, DType::f64, 2.0, 310, -3, 3);
        Tensor q = full({1, 1, 3, 8}, 30.0), k = random_tensor({1, 1, 3, 8}, 320, DType::f32, 2, 3);
        Tensor y = attention(q, k, random_tensor({1, 1, 3, 8}, 321), 1.0);  // scores ~ 600
        for (float e : y.to_vector<float>()) CHECK(std::isfinite(e));
    }

    TEST_CASE("needs-grad masks: only the inputs that require a gradient receive one") {
        const Shape s{2, 3, 6, 8};
        Tensor q = random_tensor(s, 400, DType::f64), k = random_tensor(s, 401, DType::f64);
        Tensor v = random_tensor(s, 402, DType::f64).requires_grad_();
        Tensor g = random_tensor(s, 403, DType::f64);
        attention(q, k, v).backward(g);
        CHECK(!q.grad().defined());
        CHECK(!k.grad().defined());
        REQUIRE(v.grad().defined());
        // dv = Pᵀ dO and the rows of P sum to one: summed over the keys, dv equals dO summed over the queries.
        std::vector<double> dv = v.grad().to_vector<double>(), gv = g.to_vector<double>();
        for (int64_t bh = 0; bh < 6; ++bh)
            for (int64_t d = 0; d < 8; ++d) {
                double a = 0, b = 0;
                for (int64_t t = 0; t < 6; ++t) a += dv[(bh * 6 + t) * 8 + d], b += gv[(bh * 6 + t) * 8 + d];
                CHECK(a == doctest::Approx(b).epsilon(1e-12));
            }
        Tensor k2 = k.clone().requires_grad_();
        attention(q, k2, v.detach()).backward(g);
        CHECK(k2.grad().defined());
        CHECK(!q.grad().defined());
    }

    TEST_CASE("the CPU kernel writes only the gradients asked for, deterministically; dk sums to zero") {
        const kernels::AttentionParams p = kernels::attention_params_bhtd(2, 3, 9, 8, 0.35);
        const size_t n = size_t(2 * 3 * 9 * 8);
        std::vector<double> q = random_vector<double>(n, 1), k = random_vector<double>(n, 2),
                            v = random_vector<double>(n, 3), g = random_vector<double>(n, 4);
        std::vector<double> o(n), lse(54), dq(n, 7.0), dk(n, 7.0), dv(n, 7.0), dk2(n, 0.0);
        kernels::attention_fwd_cpu(p, q.data(), k.data(), v.data(), o.data(), lse.data());
        kernels::attention_bwd_cpu(p, q.data(), k.data(), v.data(), o.data(), g.data(), lse.data(),
                                   static_cast<double*>(nullptr), dk.data(), static_cast<double*>(nullptr));
        CHECK(dq == std::vector<double>(n, 7.0));
        CHECK(dv == std::vector<double>(n, 7.0));
        kernels::attention_bwd_cpu(p, q.data(), k.data(), v.data(), o.data(), g.data(), lse.data(), dq.data(),
                                   dk2.data(), dv.data());
        CHECK(dk == dk2);  // written (=), bit-identical between runs
        // Each row of dS sums to zero (sum_j P_ij dP_ij = dO_i·O_i), so dk = s dSᵀ Q sums to zero over the keys.
        for (int64_t bh = 0; bh < 6; ++bh)
            for (int64_t d = 0; d < 8; ++d) {
                double sum = 0;
                for (int64_t t = 0; t < 9; ++t) sum += dk[size_t((bh * 9 + t) * 8 + d)];
                CHECK(std::fabs(sum) < 1e-12);
            }
    }

    TEST_CASE("errors name the shapes and the supported head dims") {
        Tensor q = random_tensor({2, 3, 5, 8}, 500);
        expect_error<ShapeError>([&] { attention(q, random_tensor({2, 3, 6, 8}, 501), q); },
                                 {"[2, 3, 5, 8]", "[2, 3, 6, 8]"});
        expect_error<ShapeError>([&] { attention(q, q, random_tensor({2, 3, 5, 4}, 502)); },
                                 {"[2, 3, 5, 8]", "[2, 3, 5, 4]"});
        expect_error<ShapeError>([&] { attention(random_tensor({6, 5, 8}, 503), q, q); }, {"[6, 5, 8]", "[B, heads"});
        Tensor big = random_tensor({1, 1, 3, 136}, 504);
        expect_error<ShapeError>([&] { attention(big, big, big); }, {"136", "[1, 1, 3, 136]", "128"});
        expect_error<ShapeError>([&] { attention_qkv(random_tensor({2, 5, 3 * 2 * 136}, 505), 2); }, {"136", "128"});
        expect_error<ShapeError>([&] { attention_qkv(random_tensor({2, 5, 40}, 506), 3); },
                                 {"[2, 5, 40]", "heads = 3"});
        expect_error<ShapeError>([&] { attention_qkv(random_tensor({2, 5, 36}, 507), 0); }, {"heads"});
        expect_error<ShapeError>([&] { attention_qkv(q, 1); }, {"[2, 3, 5, 8]"});
        expect_error<DTypeError>([&] { attention(q, q.to(DType::f64), q); }, {"f32", "f64"});
        expect_error<DTypeError>([&] { attention(q.to(DType::bf16), q.to(DType::bf16), q.to(DType::bf16)); },
                                 {"bf16", "CPU"});
        expect_error<DTypeError>([&] { attention_qkv(zeros({1, 2, 6}, DType::i32), 1); }, {"i32"});
        CHECK_THROWS_AS(attention(q, q, q, std::nan("")), Error);
        CHECK_THROWS_AS(attention(q, Tensor(), q), Error);
    }
}


#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

struct EmuCase {
    int B, H, T, D;
    bool fused;  // the qkv [B, T, 3, H, D] layout (else three [B, H, T, D] tensors)
    double scale;
};

std::string case_name(const EmuCase& c) {
    return "B" + std::to_string(c.B) + " H" + std::to_string(c.H) + " T" + std::to_string(c.T) + " D" +
           std::to_string(c.D) + (c.fused ? " qkv" : " bhtd") + " scale " + std::to_string(c.scale);
}

kernels::AttentionParams emu_params(const EmuCase& c) {
    const double s = c.scale == 0 ? 1 / std::sqrt(double(c.D)) : c.scale;
    return c.fused ? kernels::attention_params_qkv(c.B, c.H, c.T, c.D, s)
                   : kernels::attention_params_bhtd(c.B, c.H, c.T, c.D, s);
}

template <class T>
std::vector<float> as_f32(const emu::Buffer<T>& b, size_t from = 0, size_t count = size_t(-1)) {
    const size_t n = std::min(count, b.size() - from);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(b[from + i]);
    return v;
}

// T-rounded random values in [lo, hi), as T (for the kernels) and as f32 (for the CPU reference).
template <class T>
void rounded(size_t n, uint64_t seed, double lo, double hi, std::vector<T>& t, std::vector<float>& f) {
    std::vector<float> r = random_vector<float>(n, seed, lo, hi);
    t.resize(n), f.resize(n);
    for (size_t i = 0; i < n; ++i) t[i] = T(r[i]), f[i] = static_cast<float>(t[i]);
}

double max_err(const std::vector<float>& got, const std::vector<double>& ref) {
    double e = 0;
    for (size_t i = 0; i < got.size(); ++i) e = std::max(e, std::fabs(double(got[i]) - ref[i]));
    return e;
}

// The emulated forward, then the emulated backward on the forward's own O and lse (the pipeline of the op), of T
// against the CPU reference in f64 on the same T-rounded inputs. q, k, v live in one buffer of 3n elements (bhtd:
// three consecutive tensors; qkv: the fused layout), and so do dq, dk, dv. `flash`: scores so large that the
// gradients are ill-conditioned (P nearly one-hot: dP - Dsum cancels); they must then be within 2x the error of
// the CPU f32 path with O and the gradients stored in T (the flash-attention rule). `skip` drops dq and dv (null
// pointers), which must then stay untouched (the buffers start as NaN).
template <class T>
void emu_attention(const EmuCase& c, uint64_t seed, double lo = -1, double hi = 1, bool flash = false,
                   bool skip = false) {
    const kernels::AttentionParams p = emu_params(c);
    const size_t n = size_t(c.B) * c.H * c.T * c.D, rows = size_t(c.B) * c.H * c.T;
    const size_t ko = c.fused ? size_t(c.H) * c.D : n;
    std::vector<T> in, dout;
    std::vector<float> in_f, dout_f, o32(n), lse32(rows), d32(3 * n, 0.f);
    rounded(3 * n, seed, lo, hi, in, in_f);
    rounded(n, seed + 1, -1, 1, dout, dout_f);
    const std::vector<double> in_d(in_f.begin(), in_f.end()), dout_d(dout_f.begin(), dout_f.end());
    std::vector<double> o_ref(n), lse_ref(rows), d_ref(3 * n, 0.0);
    const double* di = in_d.data();
    kernels::attention_fwd_cpu(p, di, di + ko, di + 2 * ko, o_ref.data(), lse_ref.data());
    kernels::attention_bwd_cpu(p, di, di + ko, di + 2 * ko, o_ref.data(), dout_d.data(), lse_ref.data(),
                               d_ref.data(), d_ref.data() + ko, d_ref.data() + 2 * ko);

    emu::Buffer<T> bin(in), bo(n), bdout(dout), bd(3 * n);
    emu::Buffer<float> blse(rows), ws(kernels::emu::attention_bwd_workspace(p));
    T *x = bin.data(), *d = bd.data();
    kernels::emu::attention_fwd(p, x, x + ko, x + 2 * ko, bo.data(), blse.data(), nullptr);
    kernels::emu::attention_bwd(p, x, x + ko, x + 2 * ko, bo.data(), bdout.data(), blse.data(), skip ? nullptr : d,
                                d + ko, skip ? nullptr : d + 2 * ko, ws.data(), nullptr);
    const bool f32 = std::is_same<T, float>::value;
    const Tol tol = f32 ? tol_emu_f32() : tol_for(DType::bf16);
    const std::string what = std::string("emu attention ") + (f32 ? "f32 " : "bf16 ") + case_name(c);
    expect_close(as_f32(bo), o_ref, tol, what + " forward");
    expect_close(blse.to_vector(), lse_ref, tol_emu_f32(), what + " lse");
    const std::vector<float> got = as_f32(bd);
    if (flash) {
        const float* fi = in_f.data();
        kernels::attention_fwd_cpu(p, fi, fi + ko, fi + 2 * ko, o32.data(), lse32.data());
        for (float& x : o32) x = static_cast<float>(T(x));  // O stored in T, as the kernels store it
        kernels::attention_bwd_cpu(p, fi, fi + ko, fi + 2 * ko, o32.data(), dout_f.data(), lse32.data(), d32.data(),
                                   d32.data() + ko, d32.data() + 2 * ko);
        for (float& x : d32) x = static_cast<float>(T(x));
        const double e = max_err(got, d_ref), e32 = max_err(d32, d_ref);
        CHECK_MESSAGE(e <= 2 * e32 + 1e-6, what, ": gradient error ", e, " vs the CPU path's ", e32);
    } else if (!skip) {
        expect_close(got, d_ref, tol, what + " dq, dk, dv");
    } else {
        size_t bad = 0;
        for (size_t i = 0; i < 3 * n; ++i) {
            const bool is_k = c.fused ? (i / ko) % 3 == 1 : i / n == 1;
            const double err = std::fabs(got[i] - d_ref[i]), lim = tol.atol + tol.rtol * std::fabs(d_ref[i]);
            bad += is_k ? !(err <= lim) : !std::isnan(got[i]);
        }
        CHECK_MESSAGE(bad == 0, what, ": dk only: ", bad, " elements wrong or dq / dv written");
    }
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("attention kernels emulated vs CPU, f32: ViT token counts, T off the tiles, D 8-128, both layouts") {
        const EmuCase cases[] = {
            {1, 2, 5, 64, false, 0},   {2, 3, 37, 64, false, 0}, {1, 2, 65, 64, true, 0}, {1, 2, 197, 64, false, 0},
            {2, 1, 64, 64, true, 0.2}, {1, 2, 33, 32, true, 0},  {2, 1, 37, 32, false, 0}, {1, 2, 21, 128, false, 0},
            {1, 1, 40, 128, true, 0},  {1, 2, 19, 8, false, 0.5}, {1, 2, 23, 40, true, 0}, {1, 1, 1, 64, false, 0},
        };
        uint64_t seed = 1000;
        for (const EmuCase& c : cases) emu_attention<float>(c, seed += 2);
        emu_attention<float>({1, 2, 37, 64, false, 1.0}, seed += 2, -3, 3, true);  // scores ~ +-50
        emu_attention<float>({1, 2, 37, 64, true, 0}, seed += 2, -1, 1, false, true);
    }

    TEST_CASE("attention kernels emulated vs CPU, bf16 storage") {
        const EmuCase cases[] = {
            {1, 2, 5, 64, false, 0},  {2, 3, 37, 64, true, 0},  {1, 2, 65, 64, false, 0},
            {1, 1, 197, 64, true, 0}, {1, 1, 29, 32, false, 0}, {1, 1, 17, 128, true, 0},
        };
        uint64_t seed = 2000;
        for (const EmuCase& c : cases) emu_attention<bf16>(c, seed += 2);
        emu_attention<bf16>({1, 2, 37, 64, false, 1.0}, seed += 2, -3, 3, true);
        emu_attention<bf16>({1, 1, 65, 64, false, 0}, seed += 2, -1, 1, false, true);
    }

    TEST_CASE("the launchers refuse head dims they do not support") {
        emu::Buffer<float> x(size_t(3 * 12 * 2)), lse(6);
        kernels::AttentionParams p = kernels::attention_params_bhtd(1, 1, 6, 12, 0.3);
        CHECK_THROWS_AS(kernels::emu::attention_fwd(p, x.data(), x.data(), x.data(), x.data(), lse.data(), nullptr),
                        std::invalid_argument);
        p = kernels::attention_params_bhtd(1, 1, 1, 136, 0.3);
        CHECK_THROWS_AS(kernels::emu::attention_fwd(p, x.data(), x.data(), x.data(), x.data(), lse.data(), nullptr),
                        std::invalid_argument);
    }
}
#endif

namespace {

// The op on cuda:0 in dt against the CPU op in f64 on the same dt-rounded values: output and input gradients.
void gpu_vs_cpu(int64_t B, int64_t H, int64_t T, int64_t D, bool fused, DType dt, uint64_t seed) {
    const Device g = Device::cuda(0);
    auto make = [&](const Shape& s, uint64_t sd) { return random_tensor(s, sd).to(dt).to(DType::f64); };
    std::vector<Tensor> x;
    if (fused) x = {make({B, T, 3 * H * D}, seed)};
    else x = {make({B, H, T, D}, seed), make({B, H, T, D}, seed + 1), make({B, H, T, D}, seed + 2)};
    auto f = [&](const std::vector<Tensor>& t) {
        return fused ? attention_qkv(t[0], int(H)) : attention(t[0], t[1], t[2]);
    };
    std::vector<Tensor> xc, xg;
    for (const Tensor& t : x) {
        xc.push_back(t.clone().requires_grad_());
        xg.push_back(t.to(dt).to(g).requires_grad_());
    }
    Tensor y = f(xc), yg = f(xg);
    Tensor dy = make(y.shape(), seed + 3);
    y.backward(dy);
    yg.backward(dy.to(dt).to(g));
    CHECK(yg.dtype() == dt);
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    const std::string what = "gpu " + std::string(dtype_name(dt)) + (fused ? " attention_qkv " : " attention ") +
                             shape_str({B, H, T, D});
    expect_close(yg.to(Device::cpu()), y, tol, what + " forward");
    for (size_t i = 0; i < x.size(); ++i)
        expect_close(xg[i].grad().to(Device::cpu()), xc[i].grad(), tol, what + " gradient " + std::to_string(i));
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("attention on the GPU matches the CPU at the ViT shapes (B 4, heads 3, D 64), f32 and bf16") {
        uint64_t seed = 3000;
        for (DType dt : {DType::f32, DType::bf16})
            for (int64_t T : {37, 65, 197})
                for (bool fused : {false, true}) gpu_vs_cpu(4, 3, T, 64, fused, dt, seed += 4);
    }

    TEST_CASE("attention on the GPU matches the CPU at odd shapes and head dims 8-128") {
        uint64_t seed = 3100;
        for (DType dt : {DType::f32, DType::bf16}) {
            gpu_vs_cpu(2, 2, 5, 32, true, dt, seed += 4);
            gpu_vs_cpu(3, 1, 7, 8, false, dt, seed += 4);
            gpu_vs_cpu(2, 3, 50, 40, true, dt, seed += 4);
            gpu_vs_cpu(1, 2, 130, 128, false, dt, seed += 4);
            gpu_vs_cpu(2, 6, 64, 64, true, dt, seed += 4);
            gpu_vs_cpu(1, 1, 300, 64, false, dt, seed += 4);
        }
    }

    TEST_CASE("the GPU backward is deterministic: two runs give identical bits") {
        const Device g = Device::cuda(0);
        Tensor x = random_tensor({4, 197, 3 * 6 * 64}, 3200).to(g), dy = random_tensor({4, 197, 6 * 64}, 3201).to(g);
        std::vector<float> first;
        for (int run = 0; run < 2; ++run) {
            Tensor qkv = x.clone().requires_grad_();
            attention_qkv(qkv, 6).backward(dy);
            std::vector<float> got = qkv.grad().to_vector<float>();
            if (run == 0) first = got;
            else CHECK(got == first);
        }
    }
}
