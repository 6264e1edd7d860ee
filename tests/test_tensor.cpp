// Tensor basics: factories, views, casts, transfers, printing, validation errors; the basic kernels
// (fill, cast, axpy) emulated against the CPU reference; the same on the GPU where one is present.
#include <doctest/doctest.h>

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
        Tensor acc = accumulate(xg.clone(), xg);
        expect_close(acc.to(Device::cpu()), accumulate(x.clone(), x), tol_gpu_f32(), "accumulate");
    }
}
