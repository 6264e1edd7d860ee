// Counter-based randomness: Philox4x32-10 known answers (Random123), the float transforms against libm,
// uniform / normal / truncated-normal statistics, independence from the thread count and the partition
// (offset fills), Generator and derive keys, initialiser errors; the emulated fill kernels and the GPU
// fills against the CPU bit for bit.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/random.h"
#include "kernels/random.h"
#include "tests/compare.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

constexpr double kPi = 3.14159265358979323846;

struct Moments {
    double mean = 0, var = 0;
};
Moments moments(const std::vector<double>& v) {
    Moments m;
    for (double x : v) m.mean += x;
    m.mean /= static_cast<double>(v.size());
    for (double x : v) m.var += (x - m.mean) * (x - m.mean);
    m.var /= static_cast<double>(v.size() - 1);
    return m;
}

double phi(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2 * kPi); }
double cdf(double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); }

kernels::RandomParams params_for(RngKey key, int64_t n, uint64_t offset = 0) {
    kernels::RandomParams p;
    p.seed = key.seed;
    p.stream = key.stream;
    p.n = n;
    p.offset = offset;
    p.lo = -0.75;
    p.hi = 2.5;
    p.mean = 0.3;
    p.std = 1.7;
    p.lower = -1.0;
    p.upper = 3.0;
    return p;
}

enum class Kind { uniform, normal, trunc };
template <class T>
std::vector<T> cpu_fill(Kind k, const kernels::RandomParams& p) {
    std::vector<T> v(static_cast<size_t>(p.n));
    if (k == Kind::uniform) kernels::uniform_fill_cpu(p, v.data());
    if (k == Kind::normal) kernels::normal_fill_cpu(p, v.data());
    if (k == Kind::trunc) kernels::trunc_normal_fill_cpu(p, v.data());
    return v;
}

std::vector<uint16_t> bits_of(const std::vector<bf16>& v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
    return b;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("Philox4x32-10 reproduces the Random123 known-answer vectors") {
        using philox::U4;
        const U4 a = philox::philox4x32_10(U4{{0, 0, 0, 0}}, 0, 0);
        CHECK(a.v[0] == 0x6627e8d5u);
        CHECK(a.v[1] == 0xe169c58du);
        CHECK(a.v[2] == 0xbc57ac4cu);
        CHECK(a.v[3] == 0x9b00dbd8u);
        const uint32_t f = 0xffffffffu;
        const U4 b = philox::philox4x32_10(U4{{f, f, f, f}}, f, f);
        CHECK(b.v[0] == 0x408f276du);
        CHECK(b.v[1] == 0x41c83b0eu);
        CHECK(b.v[2] == 0xa20bc7c6u);
        CHECK(b.v[3] == 0x6d5451fdu);
        const U4 c = philox::philox4x32_10(U4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u,
                                           0x299f31d0u);
        CHECK(c.v[0] == 0xd16cfe09u);
        CHECK(c.v[1] == 0x94fdccebu);
        CHECK(c.v[2] == 0x5001e420u);
        CHECK(c.v[3] == 0x24126ea1u);
        // block(): seed -> key words, (block index, stream) -> counter words.
        const U4 d = philox::block(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull);
        CHECK(d.v[0] == 0xd16cfe09u);
        CHECK(d.v[3] == 0x24126ea1u);
    }

    TEST_CASE("float transforms: uniform ranges, log/sincos/erfinv against libm") {
        CHECK(philox::uniform01(0u) == 0.0f);
        CHECK(philox::uniform01(0xffffffffu) == 1.0f - 5.9604644775390625e-08f);
        CHECK(philox::uniform01_open_low(0u) == 5.9604644775390625e-08f);
        CHECK(philox::uniform01_open_low(0xffffffffu) == 1.0f);
        double max_log = 0, max_sc = 0, max_erfinv = 0;
        for (uint32_t k = 1; k <= 100000; ++k) {
            const uint32_t w = k * 42943u + 17u;  // spread over [0, 2^32)
            const float u = philox::uniform01_open_low(w);
            max_log = std::fmax(max_log, std::fabs(philox::log_f(u) - std::log(double(u))) /
                                             std::fmax(1e-3, std::fabs(std::log(double(u)))));
            const double ang = 2 * kPi * double(w) / 4294967296.0;
            const philox::SinCos sc = philox::sincos_turn(w);
            max_sc = std::fmax(max_sc, std::fmax(std::fabs(sc.s - std::sin(ang)), std::fabs(sc.c - std::cos(ang))));
            const float t = 2.f * u - 1.f;
            const double back = std::erf(double(philox::erfinv_f(t)));
            max_erfinv = std::fmax(max_erfinv, std::fabs(back - t));
        }
        CHECK(max_log < 1e-6);
        CHECK(max_sc < 3e-7);
        CHECK(max_erfinv < 1e-6);
        CHECK(std::isinf(philox::log_f(0.f)));
        CHECK(philox::log_f(1.f) == 0.f);
        CHECK(std::fabs(philox::erfinv_f(0.5f) - 0.4769362762044699) < 1e-6);
        CHECK(std::isfinite(philox::erfinv_f(1.f)));
    }

    TEST_CASE("uniform_: range, mean and variance on 1e5 draws (f32 and f64 agree)") {
        const int64_t n = 100003;
        const double lo = -0.5, hi = 1.5;
        Tensor t = empty({n}), d = empty({n}, DType::f64);
        uniform_(t, lo, hi, {7, 1});
        uniform_(d, lo, hi, {7, 1});
        std::vector<double> v = t.to_vector<double>(), vd = d.to_vector<double>();
        bool in_range = true;
        for (size_t i = 0; i < v.size(); ++i) {
            in_range &= v[i] >= lo && v[i] <= hi && vd[i] >= lo && vd[i] < hi;
            REQUIRE(std::fabs(v[i] - vd[i]) <= 2e-7);
        }
        CHECK(in_range);
        const Moments m = moments(v);
        const double w = hi - lo;
        CHECK(std::fabs(m.mean - 0.5) < 5 * w / std::sqrt(12.0 * n));
        CHECK(std::fabs(m.var - w * w / 12) < 5 * w * w * std::sqrt(1.0 / 80 - 1.0 / 144) / std::sqrt(double(n)));
    }

    TEST_CASE("normal_: mean, std and the one-sigma mass; randn is normal_(0, 1)") {
        const int64_t n = 100003;
        Tensor t = empty({n});
        normal_(t, 2.0, 3.0, {11, 0});
        const Moments m = moments(t.to_vector<double>());
        CHECK(std::fabs(m.mean - 2.0) < 5 * 3.0 / std::sqrt(double(n)));
        CHECK(std::fabs(std::sqrt(m.var) - 3.0) < 5 * 3.0 / std::sqrt(2.0 * n));
        Tensor z = randn({n}, {11, 0});
        std::vector<double> zv = z.to_vector<double>(), tv = t.to_vector<double>();
        size_t inside = 0;
        for (size_t i = 0; i < zv.size(); ++i) {
            inside += std::fabs(zv[i]) < 1.0;
            REQUIRE(std::fabs(tv[i] - (2.0 + 3.0 * zv[i])) < 1e-5);
        }
        const double frac = double(inside) / n, p1 = 0.682689492137;
        CHECK(std::fabs(frac - p1) < 5 * std::sqrt(p1 * (1 - p1) / n));
        Tensor zd = randn({n}, {11, 0}, DType::f64);
        expect_close(zd, z.to(DType::f64), {0, 0}, "f64 normals are the f32 base draws");
    }

    TEST_CASE("trunc_normal_: stays in [a, b] with the truncated mean and std") {
        const int64_t n = 100003;
        struct Case {
            double mean, std, a, b;
        };
        for (Case c : {Case{0.0, 1.0, -2.0, 2.0}, Case{1.0, 1.0, 0.0, 3.0}, Case{0.0, 0.02, -2.0, 2.0}}) {
            CAPTURE(c.mean);
            CAPTURE(c.a);
            Tensor t = empty({n});
            trunc_normal_(t, c.mean, c.std, c.a, c.b, {5, 9});
            std::vector<double> v = t.to_vector<double>();
            bool in_range = true;
            for (double x : v) in_range &= x >= c.a && x <= c.b;
            CHECK(in_range);
            const double al = (c.a - c.mean) / c.std, be = (c.b - c.mean) / c.std, z = cdf(be) - cdf(al);
            const double mu = c.mean + c.std * (phi(al) - phi(be)) / z;
            const double var = c.std * c.std *
                               (1 + (al * phi(al) - be * phi(be)) / z - std::pow((phi(al) - phi(be)) / z, 2));
            const Moments m = moments(v);
            CHECK(std::fabs(m.mean - mu) < 5 * std::sqrt(var / n));
            CHECK(std::fabs(std::sqrt(m.var) - std::sqrt(var)) < 5 * std::sqrt(var / n));
        }
        Tensor d = empty({1001}, DType::f64);
        trunc_normal_(d, 0.0, 1.0, -0.5, 0.25, {5, 9});
        for (double x : d.to_vector<double>()) REQUIRE((x >= -0.5 && x <= 0.25));
        trunc_normal_(d, 0.5, 0.0, -1.0, 1.0, {5, 9});  // std 0: the mean
        for (double x : d.to_vector<double>()) REQUIRE(x == 0.5);
        trunc_normal_(d, 3.0, 1e-3, -1.0, 1.0, {5, 9});  // all mass beyond b: clamped to b
        for (double x : d.to_vector<double>()) REQUIRE(x == 1.0);
    }

    TEST_CASE("same key, same numbers with 1, 2 and 3 OpenMP threads") {
        const int64_t n = 50001;  // above the OpenMP threshold
        const int saved = omp_get_max_threads();
        for (Kind k : {Kind::uniform, Kind::normal, Kind::trunc}) {
            const kernels::RandomParams p = params_for({123, 456}, n);
            omp_set_num_threads(1);
            const std::vector<float> one = cpu_fill<float>(k, p);
            omp_set_num_threads(2);
            const std::vector<float> two = cpu_fill<float>(k, p);
            omp_set_num_threads(3);
            const std::vector<double> three = cpu_fill<double>(k, p);
            CHECK(one == two);
            omp_set_num_threads(1);
            CHECK(three == cpu_fill<double>(k, p));
        }
        omp_set_num_threads(saved);
    }

    TEST_CASE("a fill equals the concatenation of partial fills at any offset; bf16 is the rounded f32") {
        const int64_t n = 1037;
        for (Kind k : {Kind::uniform, Kind::normal, Kind::trunc}) {
            const std::vector<float> whole = cpu_fill<float>(k, params_for({3, 4}, n));
            const std::vector<double> whole_d = cpu_fill<double>(k, params_for({3, 4}, n));
            for (int64_t cut : {1, 2, 3, 5, 13, 514, 1036}) {
                std::vector<float> a = cpu_fill<float>(k, params_for({3, 4}, cut));
                const std::vector<float> b = cpu_fill<float>(k, params_for({3, 4}, n - cut, uint64_t(cut)));
                a.insert(a.end(), b.begin(), b.end());
                REQUIRE(a == whole);
                const std::vector<double> bd = cpu_fill<double>(k, params_for({3, 4}, n - cut, uint64_t(cut)));
                REQUIRE(std::equal(bd.begin(), bd.end(), whole_d.begin() + cut));
            }
            std::vector<bf16> rounded(whole.size());
            for (size_t i = 0; i < whole.size(); ++i) rounded[i] = bf16(whole[i]);
            CHECK(bits_of(cpu_fill<bf16>(k, params_for({3, 4}, n))) == bits_of(rounded));
        }
    }

    TEST_CASE("Generator: successive keys differ, tags separate, state restores; derive hashes ids") {
        Generator g(42);
        const RngKey k0 = g.next(), k1 = g.next(), kt = g.next(7);
        CHECK(k0 != k1);
        CHECK(k0.seed == 42);
        CHECK(kt.seed != 42);
        CHECK(g.counter() == 3);
        Generator h(g.seed());
        h.set_counter(1);
        CHECK(h.next() == k1);
        CHECK(h.next(7) == kt);
        CHECK(h.next() == g.next());
        std::vector<float> a = rand({257}, k0).to_vector<float>(), b = rand({257}, k1).to_vector<float>();
        size_t same = 0;
        for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
        CHECK(same < 3);
        CHECK(rand({257}, k0).to_vector<float>() == a);

        const RngKey d = derive(1, {2, 3, 4, 0});
        CHECK(d == derive(1, {2, 3, 4, 0}));
        CHECK(d != derive(1, {2, 3, 4, 1}));
        CHECK(d != derive(1, {3, 2, 4, 0}));
        CHECK(d != derive(2, {2, 3, 4, 0}));
        CHECK(d != derive(1, {2, 3, 4}));
        CHECK(splitmix64(0) != splitmix64(1));
    }

    TEST_CASE("constant_, kaiming_normal_ and rand; errors name the op") {
        Tensor c = empty({3, 5}, DType::f64);
        constant_(c, -0.25);
        for (double v : c.to_vector<double>()) CHECK(v == -0.25);
        Tensor ci = empty({4}, DType::i64);
        constant_(ci, 3);
        CHECK(ci.to_vector<int64_t>() == std::vector<int64_t>{3, 3, 3, 3});

        const int64_t fan = 3 * 3 * 64;
        Tensor w = empty({64, 3, 3, 71});
        kaiming_normal_(w, fan, {1, 2});
        const double sd = std::sqrt(moments(w.to_vector<double>()).var);
        CHECK(std::fabs(sd - std::sqrt(2.0 / fan)) < 5 * std::sqrt(2.0 / fan) / std::sqrt(2.0 * w.numel()));

        Tensor r = rand({31, 7}, {8, 8}, DType::f64);
        CHECK(r.shape() == Shape{31, 7});
        for (double v : r.to_vector<double>()) REQUIRE((v >= 0 && v < 1));

        Tensor leaf = random_tensor({4}, 3, DType::f64).requires_grad_();
        uniform_(leaf, 0, 1, {1, 1});  // leaves may be initialised
        Tensor nonleaf = leaf.clone();
        CHECK_THROWS_AS(uniform_(nonleaf, 0, 1, {1, 1}), AutogradError);
        Tensor ints = empty({4}, DType::i32);
        CHECK_THROWS_AS(normal_(ints, 0, 1, {1, 1}), DTypeError);
        Tensor f = empty({4});
        CHECK_THROWS_AS(uniform_(f, 1, 0, {1, 1}), Error);
        CHECK_THROWS_AS(normal_(f, 0, -1, {1, 1}), Error);
        CHECK_THROWS_AS(trunc_normal_(f, 0, 1, 2, 2, {1, 1}), Error);
        CHECK_THROWS_AS(kaiming_normal_(f, 0, {1, 1}), Error);
        try {
            normal_(ints, 0, 1, {1, 1});
        } catch (const DTypeError& e) {
            CHECK(std::string(e.what()).find("normal_") != std::string::npos);
        }
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
TEST_SUITE("emu") {
    TEST_CASE("emulated fill kernels equal the CPU bit for bit (f32 and bf16, with offsets)") {
        for (int64_t n : {int64_t(1), int64_t(7), int64_t(1237)}) {
            for (uint64_t offset : {uint64_t(0), uint64_t(3), uint64_t(4097)}) {
                const kernels::RandomParams p = params_for({99, 5}, n, offset);
                for (Kind k : {Kind::uniform, Kind::normal, Kind::trunc}) {
                    emu::Buffer<float> out(static_cast<size_t>(n));
                    emu::Buffer<bf16> outb(static_cast<size_t>(n));
                    if (k == Kind::uniform) kernels::emu::uniform_fill(p, out.data(), nullptr);
                    if (k == Kind::normal) kernels::emu::normal_fill(p, out.data(), nullptr);
                    if (k == Kind::trunc) kernels::emu::trunc_normal_fill(p, out.data(), nullptr);
                    if (k == Kind::uniform) kernels::emu::uniform_fill(p, outb.data(), nullptr);
                    if (k == Kind::normal) kernels::emu::normal_fill(p, outb.data(), nullptr);
                    if (k == Kind::trunc) kernels::emu::trunc_normal_fill(p, outb.data(), nullptr);
                    CHECK(out.to_vector() == cpu_fill<float>(k, p));
                    CHECK(bits_of(outb.to_vector()) == bits_of(cpu_fill<bf16>(k, p)));
                }
            }
        }
    }
}
#endif

TEST_SUITE("gpu") {
    TEST_CASE("GPU fills equal the CPU (uniform exactly; normal and truncated normal to the last ulp)") {
        const Device g = Device::cuda(0);
        for (DType dt : {DType::f32, DType::bf16}) {
            // Expected bit-identical; the f32 tolerance is one ulp, bf16 allows for a rounding-edge flip.
            const Tol tol = dt == DType::f32 ? Tol{1e-6, 1e-6} : tol_for(DType::bf16);
            const Shape shape{1000003};
            Tensor a = empty(shape, dt, g), b = empty(shape, dt);
            uniform_(a, -1.5, 0.5, {17, 3});
            uniform_(b, -1.5, 0.5, {17, 3});
            expect_close(a.to(Device::cpu()), b, {0, 0}, "uniform");
            normal_(a, 0.5, 2.0, {17, 4});
            normal_(b, 0.5, 2.0, {17, 4});
            expect_close(a.to(Device::cpu()), b, tol, "normal");
            trunc_normal_(a, 0.0, 0.02, -0.04, 0.04, {17, 5});
            trunc_normal_(b, 0.0, 0.02, -0.04, 0.04, {17, 5});
            expect_close(a.to(Device::cpu()), b, tol, "trunc_normal");
            kaiming_normal_(a, 576, {17, 6});
            kaiming_normal_(b, 576, {17, 6});
            expect_close(a.to(Device::cpu()), b, tol, "kaiming_normal");
        }
        expect_close(randn({77, 3}, {1, 2}, DType::f32, g).to(Device::cpu()), randn({77, 3}, {1, 2}), {1e-6, 1e-6},
                     "randn");
        Tensor c = empty({513}, DType::f32, g);
        constant_(c, 0.125);
        expect_close(c.to(Device::cpu()), full({513}, 0.125), {0, 0}, "constant_");
        Tensor d = empty({3}, DType::f64, g);
        CHECK_THROWS_AS(normal_(d, 0, 1, {1, 1}), DTypeError);
    }
}
