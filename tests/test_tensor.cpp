// Tensor basics: factories, views, casts, transfers, printing, validation errors; the basic kernels
// (fill, cast, axpy) emulated against the CPU reference; the same on the GPU where one is present.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <sstream>

#include "engine/autograd.h"
#include "kernels/basic.h"
#include "tests/compare.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

TEST_SUITE("cpu") {
    TEST_CASE("factories, shape and printing") {
        Tensor t = full({2, 3}, 1.5);
        CHECK(t.numel() == 6);
        CHECK(t.size(-1) == 3);
        CHECK(t.str() == "Tensor(shape=[2, 3], dtype=f32, device=cpu)");
        for (float v : t.to_vector<float>()) CHECK(v == 1.5f);
        std::ostringstream os;
        os << t;
        CHECK(os.str().find("1.5") != std::string::npos);
        CHECK(zeros({4}, DType::i64).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 0});
        CHECK_THROWS_AS(empty({-1, 2}), ShapeError);
        CHECK_THROWS_AS(t.size(2), ShapeError);
    }

    TEST_CASE("reshape and slice are views") {
        Tensor t = from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {3, 2});
        Tensor r = t.reshape({2, -1});
        CHECK(r.shape() == Shape{2, 3});
        CHECK(r.raw_data() == t.raw_data());
        Tensor s = t.slice(1, 3);
        CHECK(s.shape() == Shape{2, 2});
        CHECK(s.to_vector<float>() == std::vector<float>{2, 3, 4, 5});
        s.data<float>()[0] = 42;
        CHECK(t.to_vector<float>()[2] == 42);
        CHECK_THROWS_AS(t.reshape({4, 2}), ShapeError);
        CHECK_THROWS_AS(t.reshape({-1, -1}), ShapeError);
        CHECK_THROWS_AS(t.slice(2, 4), ShapeError);
        try {
            t.reshape({5});
            FAIL("expected ShapeError");
        } catch (const ShapeError& e) {
            CHECK(std::string(e.what()).find("[3, 2]") != std::string::npos);
        }
    }

    TEST_CASE("casts round-trip and bf16 rounds to nearest even") {
        Tensor t = from_vector(std::vector<float>{1.0f, -2.5f, 3.75f, 1.00390625f}, {4});
        CHECK(t.to(DType::f64).to(DType::f32).to_vector<float>() == t.to_vector<float>());
        std::vector<float> b = t.to(DType::bf16).to(DType::f32).to_vector<float>();
        CHECK(b[0] == 1.0f);
        CHECK(b[2] == 3.75f);
        CHECK(b[3] == 1.0f);  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins
        CHECK(t.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3, 1});
        CHECK(bf16::to_float(bf16::from_float(1.01171875f)) == 1.015625f);  // tie rounds up to even
    }

    // A corrupt checkpoint or a diverged run can hand NaN or 1e30 to a cast (the fuzzer found a checkpoint whose f32
    // tensor loaded into an i64 buffer did); a C cast of those is undefined behaviour, ours clamps.
    TEST_CASE("casts to integers are defined for NaN, infinities and out-of-range values") {
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        Tensor t = from_vector(std::vector<float>{nan, inf, -inf, 1e30f, -1e30f, 3e9f, -2.9f, 255.9f, 300.0f}, {9});
        CHECK(t.to(DType::i32).to_vector<int32_t>() ==
              std::vector<int32_t>{0, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, INT32_MAX, -2, 255, 300});
        CHECK(t.to(DType::i64).to_vector<int64_t>() ==
              std::vector<int64_t>{0, INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, 3000000000LL, -2, 255, 300});
        CHECK(t.to(DType::u8).to_vector<uint8_t>() == std::vector<uint8_t>{0, 255, 0, 255, 0, 255, 0, 255, 255});
        CHECK(t.to(DType::f64).to(DType::i64).to_vector<int64_t>() == t.to(DType::i64).to_vector<int64_t>());
        Tensor big = from_vector(std::vector<int64_t>{-5, 70000, (int64_t(1) << 53) + 1, INT64_MIN}, {4});
        CHECK(big.to(DType::u8).to_vector<uint8_t>() == std::vector<uint8_t>{0, 255, 255, 0});
        CHECK(big.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{-5, 70000, INT32_MAX, INT32_MIN});
        CHECK(full({2}, 1e12, DType::i32).to_vector<int32_t>() == std::vector<int32_t>{INT32_MAX, INT32_MAX});
    }

    TEST_CASE("data<T> checks the dtype, devices validate") {
        Tensor t = zeros({2});
        CHECK_THROWS_AS(t.data<double>(), DTypeError);
        CHECK_THROWS_AS(Device::parse("gpu0"), ConfigError);
        CHECK(Device::parse("cuda:3") == Device::cuda(3));
        if (runtime::cuda_device_count() == 0) {
            CHECK_THROWS_AS(zeros({2}, DType::f32, Device::cuda(0)), Error);
            CHECK(!runtime::cuda_unavailable_reason().empty());
        }
    }

    TEST_CASE("allocator counters track live and peak bytes") {
        runtime::MemStats before = runtime::mem_stats(Device::cpu());
        {
            Tensor a = empty({1000});
            CHECK(runtime::mem_stats(Device::cpu()).live >= before.live + 4000);
        }
        CHECK(runtime::mem_stats(Device::cpu()).live == before.live);
        CHECK(runtime::mem_stats(Device::cpu()).peak >= before.live + 4000);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
TEST_SUITE("emu") {
    TEST_CASE("basic kernels: fill, cast, axpy emulated vs CPU") {
        const int64_t n = 1237;  // not a multiple of the block
        std::vector<float> x = random_vector<float>(n, 7, -3, 3), y = random_vector<float>(n, 8);
        emu::Buffer<float> dx(x), dy(y), dout(n);
        kernels::emu::fill(dout.data(), n, 0.25, nullptr);
        for (float v : dout.to_vector()) REQUIRE(v == 0.25f);

        kernels::emu::axpy(n, 0.5f, dx.data(), dy.data(), nullptr);
        std::vector<float> ref = y;
        kernels::axpy_cpu(n, 0.5f, x.data(), ref.data());
        expect_close(dy.to_vector(), ref, tol_emu_f32(), "axpy");

        emu::Buffer<bf16> db(n);
        kernels::emu::cast(dx.data(), DType::f32, db.data(), DType::bf16, n, nullptr);
        std::vector<bf16> refb(n);
        kernels::cast_cpu(x.data(), DType::f32, refb.data(), DType::bf16, n);
        std::vector<bf16> gotb = db.to_vector();
        for (int64_t i = 0; i < n; ++i) REQUIRE(gotb[i].bits == refb[i].bits);

        emu::Buffer<int32_t> di(n);
        kernels::emu::cast(dx.data(), DType::f32, di.data(), DType::i32, n, nullptr);
        std::vector<int32_t> refi(n);
        kernels::cast_cpu(x.data(), DType::f32, refi.data(), DType::i32, n);
        CHECK(di.to_vector() == refi);

        // The edge cases of kernels/saturate.h give the same bits as the CPU cast, float and integer sources.
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        std::vector<float> edge = {nan, inf, -inf, 1e30f, -1e30f, 3e9f, -2.9f, 255.9f, 300.0f, -0.5f};
        emu::Buffer<float> de(edge);
        emu::Buffer<int32_t> de32(edge.size());
        emu::Buffer<int64_t> de64(edge.size());
        emu::Buffer<uint8_t> de8(edge.size());
        const int64_t ne = int64_t(edge.size());
        kernels::emu::cast(de.data(), DType::f32, de32.data(), DType::i32, ne, nullptr);
        kernels::emu::cast(de.data(), DType::f32, de64.data(), DType::i64, ne, nullptr);
        kernels::emu::cast(de.data(), DType::f32, de8.data(), DType::u8, ne, nullptr);
        std::vector<int32_t> r32(edge.size());
        std::vector<int64_t> r64(edge.size());
        std::vector<uint8_t> r8(edge.size());
        kernels::cast_cpu(edge.data(), DType::f32, r32.data(), DType::i32, ne);
        kernels::cast_cpu(edge.data(), DType::f32, r64.data(), DType::i64, ne);
        kernels::cast_cpu(edge.data(), DType::f32, r8.data(), DType::u8, ne);
        CHECK(de32.to_vector() == r32);
        CHECK(de64.to_vector() == r64);
        CHECK(de8.to_vector() == r8);
        std::vector<int64_t> ints = {-5, 70000, INT64_MAX, INT64_MIN, 255, 256};
        emu::Buffer<int64_t> dints(ints);
        emu::Buffer<uint8_t> dn8(ints.size());
        kernels::emu::cast(dints.data(), DType::i64, dn8.data(), DType::u8, int64_t(ints.size()), nullptr);
        std::vector<uint8_t> rn8(ints.size());
        kernels::cast_cpu(ints.data(), DType::i64, rn8.data(), DType::u8, int64_t(ints.size()));
        CHECK(dn8.to_vector() == rn8);
        CHECK(rn8 == std::vector<uint8_t>{0, 255, 255, 0, 255, 255});
    }
}
#endif

TEST_SUITE("gpu") {
    TEST_CASE("tensor transfers, fill, cast and accumulation on the GPU match the CPU") {
        const Device g = Device::cuda(0);
        Tensor x = random_tensor({517, 3}, 11);
        Tensor xg = x.to(g);
        CHECK(xg.device() == g);
        expect_close(xg.to(Device::cpu()), x, {0, 0}, "round trip");
        expect_close(full({33}, -2.0, DType::f32, g).to(Device::cpu()), full({33}, -2.0), {0, 0}, "fill");
        expect_close(xg.to(DType::bf16).to(Device::cpu()), x.to(DType::bf16), {0, 0}, "cast bf16");
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        Tensor edge = from_vector(std::vector<float>{nan, inf, -inf, 1e30f, -2.9f, 300.0f}, {6});
        for (DType d : {DType::i32, DType::i64, DType::u8})
            CHECK(edge.to(g).to(d).to(Device::cpu()).to(DType::f64).to_vector<double>() ==
                  edge.to(d).to(DType::f64).to_vector<double>());
        Tensor acc = accumulate(xg.clone(), xg);
        expect_close(acc.to(Device::cpu()), accumulate(x.clone(), x), tol_gpu_f32(), "accumulate");
    }
}
