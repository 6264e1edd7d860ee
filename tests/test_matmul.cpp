// matmul and linear: forward values against naive loops (all transposes, batched, shared 2-D b, small
// integer inputs exactly, the OpenMP small-batch path), finite-difference gradient checks in double,
// error paths; on a GPU, cuBLAS f32 and bf16 forward and backward against the CPU (no emu suite: cuBLAS
// is a library, not one of our kernels).
#include <doctest/doctest.h>

#include "engine/autograd.h"
#include "engine/ops/matmul.h"
#include "tests/gradcheck.h"

using namespace sslight;
using namespace sslight::test;

namespace {

// c[bi, i, j] = sum_k op(A_bi)[i, k] * op(B_bi)[k, j] in double; shared_b: one B for every bi.
std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t batch,
                                 int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool shared_b) {
    std::vector<double> c(static_cast<size_t>(batch * M * N), 0.0);
    for (int64_t bi = 0; bi < batch; ++bi) {
        const double* A = a.data() + bi * M * K;
        const double* B = b.data() + (shared_b ? 0 : bi * K * N);
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                double s = 0;
                for (int64_t k = 0; k < K; ++k)
                    s += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
                c[static_cast<size_t>((bi * M + i) * N + j)] = s;
            }
    }
    return c;
}

Shape mat_shape(Shape batch, int64_t rows, int64_t cols, bool trans) {
    batch.push_back(trans ? cols : rows);
    batch.push_back(trans ? rows : cols);
    return batch;
}

// Forward of matmul against the naive loops in the given dtype.
void check_matmul_forward(const Shape& batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool shared_b,
                          DType dt, uint64_t seed) {
    Tensor a = random_tensor(mat_shape(batch, M, K, ta), seed, dt);
    Tensor b = random_tensor(mat_shape(shared_b ? Shape{} : batch, K, N, tb), seed + 1, dt);
    Tensor c = matmul(a, b, ta, tb);
    Shape expect = batch;
    expect.push_back(M);
    expect.push_back(N);
    REQUIRE(c.shape() == expect);
    const std::vector<double> ref = naive_matmul(a.to_vector<double>(), b.to_vector<double>(), shape_numel(batch), M,
                                                 N, K, ta, tb, shared_b);
    expect_close(c.to_vector<double>(), ref, tol_for(dt),
                 str("matmul ", shape_str(a.shape()), " x ", shape_str(b.shape()), " ta=", ta, " tb=", tb));
}

void check_matmul_grad(const Shape& batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool shared_b,
                       uint64_t seed) {
    Tensor a = random_tensor(mat_shape(batch, M, K, ta), seed, DType::f64).requires_grad_();
    Tensor b = random_tensor(mat_shape(shared_b ? Shape{} : batch, K, N, tb), seed + 1, DType::f64).requires_grad_();
    gradcheck([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b},
              str("matmul grad ", shape_str(a.shape()), " x ", shape_str(b.shape()), " ta=", ta, " tb=", tb));
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("matmul forward matches naive loops: transposes, batches, shared b, f32 and f64") {
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb) {
                check_matmul_forward({}, 7, 5, 13, ta, tb, false, DType::f64, 10 + ta * 2 + tb);
                check_matmul_forward({2, 3}, 7, 5, 13, ta, tb, false, DType::f32, 20 + ta * 2 + tb);
                check_matmul_forward({3}, 7, 5, 13, ta, tb, true, DType::f64, 30 + ta * 2 + tb);
                check_matmul_forward({2, 2}, 33, 17, 65, ta, tb, true, DType::f32, 40 + ta * 2 + tb);
            }
    }

    TEST_CASE("matmul: OpenMP small-batch path, large matrices and a real attention shape") {
        check_matmul_forward({40}, 5, 6, 3, false, false, false, DType::f32, 50);  // 40 tiny matrices
        check_matmul_forward({2}, 70, 71, 69, true, false, false, DType::f64, 51);  // over the small cut-off
        check_matmul_forward({2, 3}, 37, 37, 64, false, true, false, DType::f32, 52);  // q·kᵀ, 37 tokens, D 64
    }

    TEST_CASE("matmul of small integers is exact; K = 0 gives zeros") {
        Tensor a = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
        Tensor b = from_vector(std::vector<float>{7, 8, 9, 10, 11, 12}, {3, 2});
        CHECK(matmul(a, b).to_vector<float>() == std::vector<float>{58, 64, 139, 154});
        CHECK(matmul(a, a, false, true).to_vector<float>() == std::vector<float>{14, 32, 32, 77});
        CHECK(matmul(a, a, true, false).to_vector<float>() ==
              std::vector<float>{17, 22, 27, 22, 29, 36, 27, 36, 45});
        Tensor z = matmul(empty({3, 0}), empty({0, 4}));
        CHECK(z.shape() == Shape{3, 4});
        for (float v : z.to_vector<float>()) CHECK(v == 0.f);
    }

    TEST_CASE("matmul gradients: four transposes, batched, shared 2-D b, odd sizes") {
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb) {
                check_matmul_grad({}, 7, 5, 13, ta, tb, false, 100 + ta * 2 + tb);
                check_matmul_grad({2, 3}, 3, 5, 4, ta, tb, false, 110 + ta * 2 + tb);
                check_matmul_grad({3}, 7, 5, 13, ta, tb, true, 120 + ta * 2 + tb);
            }
    }

    TEST_CASE("matmul gradient reaches only the inputs that require it") {
        Tensor a = random_tensor({4, 3}, 60, DType::f64).requires_grad_();
        Tensor b = random_tensor({3, 2}, 61, DType::f64);
        matmul(a, b).backward(ones({4, 2}, DType::f64));
        CHECK(a.grad().defined());
        CHECK(!b.grad().defined());
        // d/da sum(a·b) = rowsum(b) broadcast over rows
        const std::vector<double> bv = b.to_vector<double>(), ga = a.grad().to_vector<double>();
        for (int i = 0; i < 4; ++i)
            for (int k = 0; k < 3; ++k) CHECK(ga[i * 3 + k] == doctest::Approx(bv[k * 2] + bv[k * 2 + 1]));
    }

    TEST_CASE("linear forward matches x·Wᵀ + b, with and without bias, 1-D to 3-D inputs") {
        for (bool with_bias : {true, false}) {
            Tensor x = random_tensor({2, 3, 5}, 70, DType::f64), w = random_tensor({4, 5}, 71, DType::f64);
            Tensor bias = with_bias ? random_tensor({4}, 72, DType::f64) : Tensor();
            Tensor y = linear(x, w, bias);
            REQUIRE(y.shape() == Shape{2, 3, 4});
            std::vector<double> ref = naive_matmul(x.to_vector<double>(), w.to_vector<double>(), 1, 6, 4, 5, false,
                                                   true, false);
            if (with_bias) {
                const std::vector<double> bv = bias.to_vector<double>();
                for (size_t i = 0; i < ref.size(); ++i) ref[i] += bv[i % 4];
            }
            expect_close(y.to_vector<double>(), ref, tol_for(DType::f64), "linear forward");
        }
        Tensor x1 = random_tensor({5}, 73), w1 = random_tensor({3, 5}, 74), b1 = random_tensor({3}, 75);
        CHECK(linear(x1, w1, b1).shape() == Shape{3});
        // ViT-Tiny qkv projection: [2, 197, 192] -> [2, 197, 576]
        Tensor xv = random_tensor({2, 197, 192}, 76), wv = random_tensor({576, 192}, 77), bv = random_tensor({576}, 78);
        std::vector<double> ref = naive_matmul(xv.to_vector<double>(), wv.to_vector<double>(), 1, 394, 576, 192,
                                               false, true, false);
        const std::vector<double> bvv = bv.to_vector<double>();
        for (size_t i = 0; i < ref.size(); ++i) ref[i] += bvv[i % 576];
        expect_close(linear(xv, wv, bv).to_vector<double>(), ref, tol_for(DType::f32), "linear ViT-Tiny qkv");
    }

    TEST_CASE("linear gradients with and without bias, 3-D and 1-D inputs") {
        Tensor x = random_tensor({2, 3, 5}, 80, DType::f64).requires_grad_();
        Tensor w = random_tensor({4, 5}, 81, DType::f64).requires_grad_();
        Tensor b = random_tensor({4}, 82, DType::f64).requires_grad_();
        gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b},
                  "linear 3-D with bias");
        gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w}, "linear no bias");
        Tensor x1 = random_tensor({7}, 83, DType::f64).requires_grad_();
        Tensor w1 = random_tensor({3, 7}, 84, DType::f64).requires_grad_();
        Tensor b1 = random_tensor({3}, 85, DType::f64).requires_grad_();
        gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x1, w1, b1},
                  "linear 1-D");
    }

    TEST_CASE("matmul and linear errors name both shapes") {
        const std::string k_msg = error_of([] { matmul(random_tensor({2, 7, 13}, 201), random_tensor({12, 5}, 202)); });
        CHECK(k_msg.find("[2, 7, 13]") != std::string::npos);
        CHECK(k_msg.find("[12, 5]") != std::string::npos);
        CHECK_THROWS_AS(matmul(random_tensor({2, 7, 13}, 203), random_tensor({12, 5}, 204)), ShapeError);
        CHECK_THROWS_AS(matmul(random_tensor({2, 3, 4}, 205), random_tensor({3, 4, 5}, 206)), ShapeError);
        CHECK_THROWS_AS(matmul(random_tensor({3, 4}, 207), random_tensor({2, 4, 5}, 208)), ShapeError);
        CHECK_THROWS_AS(matmul(random_tensor({4}, 209), random_tensor({4, 2}, 210)), ShapeError);
        CHECK_THROWS_AS(matmul(random_tensor({3, 4}, 211), random_tensor({4, 3}, 1, DType::f64)), DTypeError);
        CHECK_THROWS_AS(matmul(zeros({3, 4}, DType::i32), zeros({4, 3}, DType::i32)), DTypeError);
        CHECK_THROWS_AS(matmul(random_tensor({3, 4}, 212).to(DType::bf16), random_tensor({4, 3}, 213).to(DType::bf16)),
                        DTypeError);
        const std::string l_msg = error_of([] { linear(random_tensor({2, 6}, 214), random_tensor({4, 5}, 215)); });
        CHECK(l_msg.find("[2, 6]") != std::string::npos);
        CHECK(l_msg.find("[4, 5]") != std::string::npos);
        CHECK_THROWS_AS(linear(random_tensor({2, 5}, 216), random_tensor({4, 5}, 217), random_tensor({3}, 218)),
                        ShapeError);
        CHECK_THROWS_AS(linear(random_tensor({2, 5}, 219), random_tensor({4, 5}, 1, DType::f64)), DTypeError);
        CHECK_THROWS_AS(linear(random_tensor({2, 5}, 220), random_tensor({20}, 221)), ShapeError);
    }
}

namespace {

// A leaf copy of `t` (f32 on the CPU) on `d` in dtype `dt`.
Tensor leaf_on(const Tensor& t, Device d, DType dt) { return t.to(d).to(dt).detach().requires_grad_(); }

// CPU f32 reference vs the GPU in dtype dt for y = f(inputs), forward and every input gradient. For bf16 the
// CPU inputs and the output weighting are rounded to bf16 first, so only the GPU's own rounding differs.
void compare_on_gpu(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                    DType dt, const std::string& what) {
    const Device g = Device::cuda(0);
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    std::vector<Tensor> cpu, gpu;
    for (Tensor& t : inputs) {
        if (dt == DType::bf16) t = t.to(DType::bf16).to(DType::f32);
        cpu.push_back(t.detach().requires_grad_());
        gpu.push_back(leaf_on(t, g, dt));
    }
    Tensor yc = f(cpu), yg = f(gpu);
    REQUIRE(yg.device() == g);
    REQUIRE(yg.dtype() == dt);
    expect_close(yg.to(Device::cpu()), yc, tol, what + " forward");
    Tensor w = random_tensor(yc.shape(), 999);
    if (dt == DType::bf16) w = w.to(DType::bf16).to(DType::f32);
    yc.backward(w);
    yg.backward(w.to(g).to(dt));
    for (size_t i = 0; i < cpu.size(); ++i)
        expect_close(gpu[i].grad().to(Device::cpu()), cpu[i].grad(), tol, what + " grad " + std::to_string(i));
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("matmul on the GPU matches the CPU: f32 and bf16, transposes, batched, shared b") {
        for (DType dt : {DType::f32, DType::bf16})
            for (int ta = 0; ta < 2; ++ta)
                for (int tb = 0; tb < 2; ++tb) {
                    const auto f = [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
                    const std::string tag = str(dtype_name(dt), " ta=", ta, " tb=", tb);
                    compare_on_gpu(
                        f, {random_tensor(mat_shape({}, 7, 13, ta), 1), random_tensor(mat_shape({}, 13, 5, tb), 2)}, dt,
                        "matmul 2-D " + tag);
                    compare_on_gpu(f,
                                   {random_tensor(mat_shape({2, 3}, 33, 65, ta), 3),
                                    random_tensor(mat_shape({2, 3}, 65, 17, tb), 4)},
                                   dt, "matmul batched " + tag);
                    compare_on_gpu(
                        f, {random_tensor(mat_shape({3}, 9, 40, ta), 5), random_tensor(mat_shape({}, 40, 11, tb), 6)},
                        dt, "matmul shared b " + tag);
                }
    }

    TEST_CASE("matmul on the GPU: real attention shapes (ViT-S, 197 tokens, head dim 64)") {
        for (DType dt : {DType::f32, DType::bf16}) {
            compare_on_gpu([](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); },
                           {random_tensor({2, 6, 197, 64}, 7), random_tensor({2, 6, 197, 64}, 8)}, dt, "q·kᵀ");
            compare_on_gpu(
                [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                {random_tensor({2, 6, 197, 197}, 9, DType::f32, 0.0, 0.02), random_tensor({2, 6, 197, 64}, 10)}, dt,
                "p·v");
        }
    }

    TEST_CASE("linear on the GPU matches the CPU: f32 and bf16, with and without bias") {
        for (DType dt : {DType::f32, DType::bf16}) {
            const auto with_bias = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
            const auto no_bias = [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); };
            compare_on_gpu(with_bias, {random_tensor({2, 3, 5}, 11), random_tensor({4, 5}, 12), random_tensor({4}, 13)},
                           dt, str("linear small ", dtype_name(dt)));
            compare_on_gpu(no_bias, {random_tensor({7, 13}, 14), random_tensor({9, 13}, 15)}, dt,
                           str("linear no bias ", dtype_name(dt)));
            // ViT-S MLP fc1 on 4 x 197 tokens: 600+ rows, so the bias gradient takes the two-pass column sum.
            compare_on_gpu(with_bias,
                           {random_tensor({4, 197, 384}, 16), random_tensor({1536, 384}, 17, DType::f32, -0.05, 0.05),
                            random_tensor({1536}, 18)},
                           dt, str("linear ViT-S fc1 ", dtype_name(dt)));
        }
    }

    TEST_CASE("GPU matmul refuses f64 and mixed devices") {
        const Device g = Device::cuda(0);
        CHECK_THROWS_AS(matmul(random_tensor({3, 4}, 1, DType::f64).to(g), random_tensor({4, 3}, 2, DType::f64).to(g)),
                        DTypeError);
        CHECK_THROWS_AS(matmul(random_tensor({3, 4}, 222).to(g), random_tensor({4, 3}, 223)), DeviceError);
    }
}
