// concat, split, permute and index_select: forward values against naive loops, finite-difference gradient
// checks (an unused split output, repeated indices), error paths; the shape kernels emulated (f32 and bf16)
// against the CPU reference; on a GPU, every op forward and backward against the CPU.
#include <doctest/doctest.h>

#include <cstring>

#include "engine/autograd.h"
#include "engine/ops/shape_ops.h"
#include "kernels/shape.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

std::vector<double> naive_permute(const std::vector<double>& x, const Shape& s, const std::vector<int64_t>& perm) {
    const size_t r = s.size();
    std::vector<int64_t> stride(r, 1), os(r);
    for (size_t d = r - 1; d > 0; --d) stride[d - 1] = stride[d] * s[d];
    for (size_t k = 0; k < r; ++k) os[k] = s[perm[k]];
    std::vector<double> y(x.size());
    for (size_t o = 0; o < y.size(); ++o) {
        int64_t rem = static_cast<int64_t>(o), src = 0;
        for (size_t k = r; k-- > 0;) {
            src += (rem % os[k]) * stride[perm[k]];
            rem /= os[k];
        }
        y[o] = x[static_cast<size_t>(src)];
    }
    return y;
}

struct PermCase {
    Shape shape;
    std::vector<int64_t> perm;
};
const std::vector<PermCase> kPermCases = {
    {{5, 7}, {1, 0}},
    {{3, 4, 5}, {0, 2, 1}},
    {{3, 4, 5}, {2, 0, 1}},
    {{2, 5, 3, 4}, {0, 2, 1, 3}},           // [B, T, heads, D] -> [B, heads, T, D]
    {{2, 3, 5, 4}, {0, 1, 3, 2}},           // batched transpose of the last two dims
    {{2, 3, 1, 4, 3}, {4, 2, 0, 3, 1}},     // rank 5 with a size-1 dim
    {{2, 1, 3, 2, 2, 3}, {5, 0, 3, 1, 4, 2}},  // rank 6
};

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("concat along dim 0 and the last dim: values and gradients") {
        Tensor a = from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
        Tensor b = from_vector(std::vector<double>{5, 6}, {1, 2});
        CHECK(concat({a, b}, 0).to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6});
        Tensor c = from_vector(std::vector<double>{7, 8, 9, 10, 11, 12}, {2, 3});
        CHECK(concat({a, c}, -1).to_vector<double>() == std::vector<double>{1, 2, 7, 8, 9, 3, 4, 10, 11, 12});
        CHECK(concat({a, c}, 1).shape() == Shape{2, 5});

        Tensor x0 = random_tensor({3, 4, 5}, 1, DType::f64).requires_grad_();
        Tensor x1 = random_tensor({2, 4, 5}, 2, DType::f64).requires_grad_();
        Tensor x2 = random_tensor({1, 4, 5}, 3, DType::f64);  // needs no gradient
        gradcheck([](const std::vector<Tensor>& in) { return concat(in, 0); }, {x0, x1, x2}, "concat dim 0");
        Tensor y0 = random_tensor({3, 4, 2}, 4, DType::f64).requires_grad_();
        Tensor y1 = random_tensor({3, 4, 7}, 5, DType::f64).requires_grad_();
        gradcheck([](const std::vector<Tensor>& in) { return concat(in, -1); }, {y0, y1}, "concat last dim");
        Tensor v0 = random_tensor({3}, 6, DType::f64).requires_grad_();
        Tensor v1 = random_tensor({4}, 7, DType::f64).requires_grad_();
        gradcheck([](const std::vector<Tensor>& in) { return concat(in, -1); }, {v0, v1}, "concat 1-D");
    }

    TEST_CASE("split along both dims; an unused output contributes zero gradient") {
        Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
        std::vector<Tensor> p = split(x, {1, 3}, -1);
        REQUIRE(p.size() == 2);
        CHECK(p[0].to_vector<double>() == std::vector<double>{1, 5});
        CHECK(p[1].to_vector<double>() == std::vector<double>{2, 3, 4, 6, 7, 8});
        CHECK(split(x, {1, 1}, 0)[1].to_vector<double>() == std::vector<double>{5, 6, 7, 8});

        Tensor a = random_tensor({6, 3, 5}, 10, DType::f64).requires_grad_();
        gradcheck([](const std::vector<Tensor>& in) {
            std::vector<Tensor> s = split(in[0], {2, 3, 1}, 0);
            return concat({s[2], s[0]}, 0);  // s[1] unused
        }, {a}, "split dim 0");
        gradcheck([](const std::vector<Tensor>& in) {
            std::vector<Tensor> s = split(in[0], {1, 2, 2}, 2);
            return concat({s[2], s[0]}, -1);  // s[1] unused
        }, {a}, "split last dim");
        gradcheck([](const std::vector<Tensor>& in) { return split(in[0], {4, 0, 1}, -1)[0]; }, {a},
                  "split with an empty piece, one output used");
    }

    TEST_CASE("permute: values against naive loops and gradients, ranks 2 to 6") {
        uint64_t seed = 20;
        for (const PermCase& c : kPermCases) {
            Tensor x = random_tensor(c.shape, seed++, DType::f64).requires_grad_();
            Tensor y = permute(x, c.perm);
            for (size_t k = 0; k < c.perm.size(); ++k) CHECK(y.shape()[k] == c.shape[c.perm[k]]);
            CHECK(y.to_vector<double>() == naive_permute(x.to_vector<double>(), c.shape, c.perm));
            gradcheck([&](const std::vector<Tensor>& in) { return permute(in[0], c.perm); }, {x},
                      "permute " + shape_str(c.shape) + " by " + shape_str(c.perm));
        }
        Tensor f = random_tensor({2, 197, 6, 64}, 30);  // ViT-S q: [B, T, heads, D] -> [B, heads, T, D]
        CHECK(permute(f, {0, 2, 1, 3}).to_vector<double>() ==
              naive_permute(f.to_vector<double>(), f.shape(), {0, 2, 1, 3}));
        Tensor i = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
        CHECK(permute(i, {-1, 0}).to_vector<int64_t>() == std::vector<int64_t>{1, 4, 2, 5, 3, 6});
    }

    TEST_CASE("index_select: rows by i64 and i32 index; repeated indices accumulate gradients") {
        Tensor x = from_vector(std::vector<double>{0, 1, 10, 11, 20, 21}, {3, 2});
        Tensor idx = from_vector(std::vector<int64_t>{2, 0, 2}, {3});
        CHECK(index_select(x, idx).to_vector<double>() == std::vector<double>{20, 21, 0, 1, 20, 21});

        Tensor a = random_tensor({5, 3, 2}, 40, DType::f64).requires_grad_();
        Tensor i64 = from_vector(std::vector<int64_t>{4, 1, 4, 4, 0, 1, 3}, {7});
        Tensor i32 = from_vector(std::vector<int32_t>{2, 2, 0}, {3});
        gradcheck([&](const std::vector<Tensor>& in) { return index_select(in[0], i64); }, {a}, "index_select i64");
        gradcheck([&](const std::vector<Tensor>& in) { return index_select(in[0], i32); }, {a}, "index_select i32");
        a.zero_grad();
        index_select(a, i64).backward(ones({7, 3, 2}, DType::f64));
        const std::vector<double> g = a.grad().to_vector<double>();
        const double count[5] = {1, 2, 0, 1, 3};
        for (int j = 0; j < 5; ++j)
            for (int c = 0; c < 6; ++c) CHECK(g[j * 6 + c] == count[j]);
    }

    TEST_CASE("shape op errors") {
        Tensor a = random_tensor({2, 3, 4}, 50), b = random_tensor({2, 3, 4}, 51, DType::f64);
        CHECK_THROWS_AS(concat({a, b}, 0), DTypeError);
        const std::string mid = error_of([&] { concat({a, a}, 1); });
        CHECK(mid.find("only dim 0 and the last dim") != std::string::npos);
        CHECK_THROWS_AS(concat({a, a}, 1), ShapeError);
        CHECK_THROWS_AS(concat({a, random_tensor({2, 4, 4}, 52)}, 0), ShapeError);
        CHECK_THROWS_AS(concat({}, 0), ShapeError);
        CHECK_THROWS_AS(split(a, {1, 2}, -1), ShapeError);
        CHECK_THROWS_AS(split(a, {3, -1}, 1), ShapeError);
        const std::string rep = error_of([&] { permute(a, {0, 1, 1}); });
        CHECK(rep.find("repeat") != std::string::npos);
        CHECK_THROWS_AS(permute(a, {0, 1, 1}), ShapeError);
        CHECK_THROWS_AS(permute(a, {0, 1}), ShapeError);
        CHECK_THROWS_AS(permute(a, {0, 1, 3}), ShapeError);
        CHECK_THROWS_AS(index_select(a, from_vector(std::vector<int64_t>{0, 2}, {2})), ShapeError);
        CHECK_THROWS_AS(index_select(a, from_vector(std::vector<int32_t>{-1}, {1})), ShapeError);
        CHECK_THROWS_AS(index_select(a, random_tensor({2}, 53)), DTypeError);
        CHECK_THROWS_AS(index_select(a, zeros({1, 1}, DType::i64)), ShapeError);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
std::vector<T> to_type(const std::vector<float>& v) {
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = T(v[i]);
    return out;
}
template <class T>
std::vector<float> to_f32(const std::vector<T>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
    return out;
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
template <class T>
emu::Buffer<T> buffer_of(const std::vector<T>& v) {
    return emu::Buffer<T>(v);
}

// The copy kernels move bits: emulated output must equal the CPU output exactly.
template <class T>
void emu_copies(uint64_t seed) {
    const kernels::RowCopyParams rc{13, 37, 50, 41};
    std::vector<T> src = to_type<T>(random_vector<float>(13 * 50, seed)), ref(13 * 41, T(0.f));
    emu::Buffer<T> ds = buffer_of(src), dd = buffer_of(ref);
    kernels::row_copy_cpu(rc, src.data(), ref.data(), sizeof(T));
    kernels::emu::row_copy(rc, ds.data(), dd.data(), sizeof(T), nullptr);
    CHECK(same_bits(dd.to_vector(), ref));

    std::vector<PermCase> cases = kPermCases;
    cases.push_back({{3, 37, 45}, {0, 2, 1}});  // tiled transpose, partial tiles
    cases.push_back({{45, 70}, {1, 0}});
    for (const PermCase& c : cases) {
        kernels::PermuteParams p;
        p.rank = static_cast<int>(c.shape.size());
        for (int d = 0; d < p.rank; ++d) {
            p.shape[d] = c.shape[d];
            p.perm[d] = static_cast<int>(c.perm[d]);
        }
        const size_t n = static_cast<size_t>(shape_numel(c.shape));
        std::vector<T> x = to_type<T>(random_vector<float>(n, seed + n)), y(n);
        emu::Buffer<T> dx = buffer_of(x), dy(n);
        kernels::permute_cpu(p, x.data(), y.data(), sizeof(T));
        kernels::emu::permute(p, dx.data(), dy.data(), sizeof(T), nullptr);
        CHECK_MESSAGE(same_bits(dy.to_vector(), y), "permute ", shape_str(c.shape), " by ", shape_str(c.perm));
    }

    const std::vector<float> bias = random_vector<float>(29, seed + 7);
    std::vector<T> bv = to_type<T>(bias), out(11 * 29);
    emu::Buffer<T> db = buffer_of(bv), dout(out.size());
    kernels::broadcast_rows_cpu(11, 29, bv.data(), out.data(), sizeof(T));
    kernels::emu::broadcast_rows(11, 29, db.data(), dout.data(), sizeof(T), nullptr);
    CHECK(same_bits(dout.to_vector(), out));
}

// index_select forward (exact) and backward, column_sum: emulated T vs the CPU in float on the same
// (T-rounded) inputs; tol: tol_emu_f32() for f32, tol_for(bf16) for bf16.
template <class T>
void emu_index_and_sums(uint64_t seed, Tol tol) {
    const kernels::IndexSelectParams p{37, 300, 19};  // 300 > one 256-entry index tile
    std::vector<int64_t> idx(p.n_index);
    for (int64_t i = 0; i < p.n_index; ++i) idx[i] = (i * 7 + i / 5) % p.rows_in;
    const std::vector<float> x = to_f32(to_type<T>(random_vector<float>(p.rows_in * p.row_size, seed)));
    std::vector<float> y(p.n_index * p.row_size);
    kernels::index_select_cpu(p, x.data(), idx.data(), y.data(), sizeof(float));
    emu::Buffer<T> dxin = buffer_of(to_type<T>(x)), dy(y.size());
    emu::Buffer<int64_t> didx = buffer_of(idx);
    kernels::emu::index_select(p, dxin.data(), didx.data(), dy.data(), sizeof(T), nullptr);
    CHECK(same_bits(dy.to_vector(), to_type<T>(y)));

    const std::vector<float> g = to_f32(to_type<T>(random_vector<float>(y.size(), seed + 1)));
    std::vector<float> dx_ref(x.size());
    kernels::index_select_bwd_cpu(p, g.data(), idx.data(), dx_ref.data());
    emu::Buffer<T> dg = buffer_of(to_type<T>(g)), ddx(x.size());
    kernels::emu::index_select_bwd(p, dg.data(), didx.data(), ddx.data(), nullptr);
    expect_close(to_f32(ddx.to_vector()), dx_ref, tol, "index_select_bwd");

    for (const kernels::ColumnSumParams cs : {kernels::ColumnSumParams{5, 70}, kernels::ColumnSumParams{600, 37}}) {
        const std::vector<float> m = to_f32(to_type<T>(random_vector<float>(cs.rows * cs.cols, seed + 2)));
        std::vector<float> ref(cs.cols);
        kernels::column_sum_cpu(cs, m.data(), ref.data());
        const int64_t ws_n = kernels::column_sum_workspace(cs);
        emu::Buffer<T> dm = buffer_of(to_type<T>(m)), dsum(cs.cols);
        emu::Buffer<float> ws(ws_n > 0 ? ws_n : 1);
        kernels::emu::column_sum(cs, dm.data(), dsum.data(), ws_n > 0 ? ws.data() : nullptr, nullptr);
        expect_close(to_f32(dsum.to_vector()), ref, tol, str("column_sum ", cs.rows, "x", cs.cols));
    }
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("shape copy kernels emulated: bit-exact vs CPU, f32 and bf16") {
        emu_copies<float>(60);
        emu_copies<bf16>(61);
    }
    TEST_CASE("index_select and column_sum kernels emulated vs CPU, f32 and bf16") {
        emu_index_and_sums<float>(70, tol_emu_f32());
        emu_index_and_sums<bf16>(71, tol_for(DType::bf16));
    }
}
#endif

namespace {

// f(inputs) on the GPU in dtype dt vs on the CPU in f32, forward and input gradients; bf16 inputs and the
// output weighting are rounded first so that the copies must agree (almost) exactly.
void compare_on_gpu(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs, DType dt,
                    const std::string& what) {
    const Device g = Device::cuda(0);
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    std::vector<Tensor> cpu, gpu;
    for (Tensor& t : inputs) {
        if (dt == DType::bf16) t = t.to(DType::bf16).to(DType::f32);
        cpu.push_back(t.detach().requires_grad_());
        gpu.push_back(t.to(g).to(dt).detach().requires_grad_());
    }
    Tensor yc = f(cpu), yg = f(gpu);
    REQUIRE(yg.device() == g);
    expect_close(yg.to(Device::cpu()), yc, tol, what + " forward");
    Tensor w = random_tensor(yc.shape(), 998);
    if (dt == DType::bf16) w = w.to(DType::bf16).to(DType::f32);
    yc.backward(w);
    yg.backward(w.to(g).to(dt));
    for (size_t i = 0; i < cpu.size(); ++i)
        expect_close(gpu[i].grad().to(Device::cpu()), cpu[i].grad(), tol, what + " grad " + std::to_string(i));
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("concat and split on the GPU match the CPU, both dims, f32 and bf16") {
        for (DType dt : {DType::f32, DType::bf16}) {
            const std::string tag = dtype_name(dt);
            compare_on_gpu([](const std::vector<Tensor>& in) { return concat(in, 0); },
                           {random_tensor({3, 4, 5}, 1), random_tensor({2, 4, 5}, 2)}, dt, "concat dim 0 " + tag);
            compare_on_gpu([](const std::vector<Tensor>& in) { return concat(in, -1); },
                           {random_tensor({3, 197, 7}, 3), random_tensor({3, 197, 64}, 4)}, dt, "concat last " + tag);
            compare_on_gpu([](const std::vector<Tensor>& in) {
                std::vector<Tensor> s = split(in[0], {64, 64, 64}, -1);  // qkv -> q, k, v; k unused
                return concat({s[2], s[0]}, -1);
            }, {random_tensor({2, 37, 192}, 5)}, dt, "split last " + tag);
            compare_on_gpu([](const std::vector<Tensor>& in) {
                std::vector<Tensor> s = split(in[0], {2, 3, 1}, 0);
                return concat({s[2], s[0]}, 0);
            }, {random_tensor({6, 3, 5}, 6)}, dt, "split dim 0 " + tag);
        }
    }

    TEST_CASE("permute on the GPU matches the CPU: tiled and general paths, f32 and bf16") {
        std::vector<PermCase> cases = kPermCases;
        cases.push_back({{4, 197, 6, 64}, {0, 2, 1, 3}});  // ViT-S [B, T, heads, D] -> [B, heads, T, D]
        cases.push_back({{4, 6, 197, 64}, {0, 1, 3, 2}});  // kᵀ per head: tiled transpose
        cases.push_back({{70000, 3, 2}, {0, 2, 1}});       // batch over the 65535 grid limit
        for (DType dt : {DType::f32, DType::bf16})
            for (const PermCase& c : cases)
                compare_on_gpu([&](const std::vector<Tensor>& in) { return permute(in[0], c.perm); },
                               {random_tensor(c.shape, 7)}, dt,
                               str("permute ", shape_str(c.shape), " by ", shape_str(c.perm), " ", dtype_name(dt)));
    }

    TEST_CASE("index_select on the GPU matches the CPU, repeated indices, i32 and i64, f32 and bf16") {
        std::vector<int64_t> iv(700);
        for (size_t i = 0; i < iv.size(); ++i) iv[i] = static_cast<int64_t>((i * 13 + i / 3) % 301);
        const Tensor i64 = from_vector(iv, {700});
        const Tensor i32 = i64.to(DType::i32);
        for (DType dt : {DType::f32, DType::bf16})
            for (const Tensor& idx : {i64, i32})
                compare_on_gpu(
                    [&](const std::vector<Tensor>& in) { return index_select(in[0], idx.to(in[0].device())); },
                    {random_tensor({301, 3, 67}, 8)}, dt,
                    str("index_select ", dtype_name(idx.dtype()), " ", dtype_name(dt)));
    }
}
