// matmul and linear: shape validation, output allocation, GEMM dispatch (OpenBLAS / cuBLAS) and their
// backward. With C = op(A)·op(B): dop(A) = dC·op(B)ᵀ and dop(B) = op(A)ᵀ·dC, each computed as one
// (batched) GEMM in the stored layout. A 2-D b shared across a's batch is multiplied as one GEMM over
// the flattened batch where the layout allows (not trans_a); its gradient sums over the batch in one GEMM
// or, with trans_a, through per-batch products and a deterministic column sum. Gradients are written (=).
#include "engine/ops/matmul.h"

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/gemm.h"
#include "kernels/shape.h"

namespace sslight {
namespace {

using kernels::GemmParams;

void check_gemm_dtype(const char* op, const Tensor& t) {
    if (t.device().is_cpu()) {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::f64, op,
                        ": the CPU supports f32 and f64, got ", t.str());
    } else {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::bf16, op,
                        ": the GPU supports f32 and bf16, got ", t.str());
    }
}

GemmParams batched(int64_t batch, int64_t m, int64_t n, int64_t k, bool ta, bool tb, int64_t sa, int64_t sb) {
    GemmParams p = kernels::gemm_params(m, n, k, ta, tb);
    p.batch = batch;
    p.stride_a = sa;
    p.stride_b = sb;
    return p;
}

// c = op(a)·op(b) (+ beta * c) as described by p, on c's device and dtype.
void run_gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor& c) {
    const Device d = c.device();
    if (d.is_cpu()) {
        if (c.dtype() == DType::f64)
            kernels::gemm_cpu(p, a.data<double>(), b.data<double>(), c.data<double>());
        else
            kernels::gemm_cpu(p, a.data<float>(), b.data<float>(), c.data<float>());
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    void* h = runtime::cublas_handle(d);
    if (c.dtype() == DType::bf16)
        kernels::cuda::gemm(p, a.data<bf16>(), b.data<bf16>(), c.data<bf16>(), h);
    else
        kernels::cuda::gemm(p, a.data<float>(), b.data<float>(), c.data<float>(), h);
    runtime::after_op(d, "gemm");
#else
    SSL_FAIL("gemm on ", d.str(), " in a build without CUDA");
#endif
}

// out: [cols] = sum over rows of x viewed as [rows, cols] (x: any tensor of rows * cols elements).
Tensor column_sum(const Tensor& x, int64_t rows, int64_t cols) {
    Tensor out = empty({cols}, x.dtype(), x.device());
    const kernels::ColumnSumParams p{rows, cols};
    if (x.device().is_cpu()) {
        if (x.dtype() == DType::f64)
            kernels::column_sum_cpu(p, x.data<double>(), out.data<double>());
        else
            kernels::column_sum_cpu(p, x.data<float>(), out.data<float>());
        return out;
    }
#ifdef SSLIGHT_WITH_CUDA
    const int64_t ws_n = kernels::column_sum_workspace(p);
    Tensor ws = ws_n ? empty({ws_n}, DType::f32, x.device()) : Tensor();
    float* w = ws.defined() ? ws.data<float>() : nullptr;
    const kernels::Stream s = runtime::stream(x.device());
    if (x.dtype() == DType::bf16)
        kernels::cuda::column_sum(p, x.data<bf16>(), out.data<bf16>(), w, s);
    else
        kernels::cuda::column_sum(p, x.data<float>(), out.data<float>(), w, s);
    runtime::after_op(x.device(), "column_sum");
#endif
    return out;
}

// out[r, :] = v for every row r of out: [rows, v.numel()].
void broadcast_rows(const Tensor& v, const Tensor& out, int64_t rows) {
    if (out.device().is_cpu()) {
        kernels::broadcast_rows_cpu(rows, v.numel(), v.raw_data(), out.raw_data(), dtype_size(v.dtype()));
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::cuda::broadcast_rows(rows, v.numel(), v.raw_data(), out.raw_data(), dtype_size(v.dtype()),
                                  runtime::stream(out.device()));
    runtime::after_op(out.device(), "broadcast_rows");
#endif
}

// Gradients arrive in the output's dtype; a cast here keeps the typed kernels safe if one ever does not.
Tensor in_dtype(const Tensor& g, DType t) { return g.defined() && g.dtype() != t ? g.to(t) : g; }

struct MatmulDims {
    int64_t batch = 1, M = 0, N = 0, K = 0;
    bool trans_a = false, trans_b = false, shared_b = false;
};

struct MatmulNode : Node {
    Tensor a, b;  // detached inputs
    MatmulDims d;
    const char* name() const override { return "matmul"; }

    // dop(A) = dC·op(B)ᵀ, written in A's stored layout.
    Tensor grad_a(const Tensor& g) const {
        Tensor da = empty(a.shape(), a.dtype(), a.device());
        const int64_t MN = d.M * d.N, sb = d.shared_b ? 0 : d.K * d.N;
        if (!d.trans_a && d.shared_b)  // [batch*M, N]·op(B)ᵀ in one GEMM
            run_gemm(kernels::gemm_params(d.batch * d.M, d.K, d.N, false, !d.trans_b), g, b, da);
        else if (!d.trans_a)  // dA [M, K] = dC [M, N] · op(B)ᵀ [N, K]
            run_gemm(batched(d.batch, d.M, d.K, d.N, false, !d.trans_b, MN, sb), g, b, da);
        else  // dA [K, M] = op(B) [K, N] · dCᵀ [N, M]
            run_gemm(batched(d.batch, d.K, d.M, d.N, d.trans_b, true, sb, MN), b, g, da);
        return da;
    }

    // Per-batch dop(B) = op(A)ᵀ·dC in B's stored layout, into out (batch stride K*N).
    void grad_b_batched(const Tensor& g, const Tensor& out) const {
        const int64_t MN = d.M * d.N, MK = d.M * d.K;
        if (!d.trans_b)  // dB [K, N] = op(A)ᵀ [K, M] · dC [M, N]
            run_gemm(batched(d.batch, d.K, d.N, d.M, !d.trans_a, false, MK, MN), a, g, out);
        else  // dB [N, K] = dCᵀ [N, M] · op(A) [M, K]
            run_gemm(batched(d.batch, d.N, d.K, d.M, true, d.trans_a, MN, MK), g, a, out);
    }

    Tensor grad_b(const Tensor& g) const {
        Tensor db = empty(b.shape(), b.dtype(), b.device());
        if (!d.shared_b) {
            grad_b_batched(g, db);
        } else if (!d.trans_a) {  // sum over the batch = one GEMM over the flattened [batch*M] rows
            const int64_t R = d.batch * d.M;
            if (!d.trans_b)
                run_gemm(kernels::gemm_params(d.K, d.N, R, true, false), a, g, db);
            else
                run_gemm(kernels::gemm_params(d.N, d.K, R, true, false), g, a, db);
        } else {  // A stored [K, M] per batch: per-batch products, then a fixed-order sum over the batch
            Tensor parts = empty({d.batch, b.size(0), b.size(1)}, b.dtype(), b.device());
            grad_b_batched(g, parts);
            db = column_sum(parts, d.batch, d.K * d.N).reshape(b.shape());
        }
        return db;
    }

    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        const Tensor g = in_dtype(grads[0], a.dtype());
        if (!g.defined()) return {Tensor(), Tensor()};
        return {needs[0] ? grad_a(g) : Tensor(), needs[1] ? grad_b(g) : Tensor()};
    }
    void release() override {
        a = Tensor();
        b = Tensor();
    }
};

MatmulDims matmul_dims(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
    const char* flags = trans_a ? (trans_b ? " (trans_a, trans_b)" : " (trans_a)") : (trans_b ? " (trans_b)" : "");
    SSL_CHECK_SHAPE(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims, got a ",
                    shape_str(a.shape()), " and b ", shape_str(b.shape()));
    MatmulDims d;
    d.trans_a = trans_a;
    d.trans_b = trans_b;
    d.shared_b = b.dim() == 2 && a.dim() > 2;
    const Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
    SSL_CHECK_SHAPE(b.dim() == 2 || batch_a == batch_b, "matmul: batch dims differ: a ", shape_str(a.shape()),
                    " vs b ", shape_str(b.shape()), " (b must have a's batch dims or be 2-D)");
    d.M = trans_a ? a.size(-1) : a.size(-2);
    d.K = trans_a ? a.size(-2) : a.size(-1);
    d.N = trans_b ? b.size(-2) : b.size(-1);
    const int64_t kb = trans_b ? b.size(-1) : b.size(-2);
    SSL_CHECK_SHAPE(d.K == kb, "matmul: inner dims differ: a ", shape_str(a.shape()), " has K = ", d.K, ", b ",
                    shape_str(b.shape()), " has K = ", kb, flags);
    d.batch = shape_numel(batch_a);
    return d;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
    SSL_PROFILE_OP("matmul");
    check_defined("matmul", a, "a");
    check_defined("matmul", b, "b");
    check_same_device("matmul", a, b);
    check_same_dtype("matmul", a, b);
    check_gemm_dtype("matmul", a);
    const MatmulDims d = matmul_dims(a, b, trans_a, trans_b);
    Shape out_shape(a.shape().begin(), a.shape().end() - 2);
    out_shape.push_back(d.M);
    out_shape.push_back(d.N);
    Tensor c = empty(out_shape, a.dtype(), a.device());
    if (d.shared_b && !trans_a)
        run_gemm(kernels::gemm_params(d.batch * d.M, d.N, d.K, false, trans_b), a, b, c);
    else
        run_gemm(batched(d.batch, d.M, d.N, d.K, trans_a, trans_b, d.M * d.K, d.shared_b ? 0 : d.K * d.N), a, b, c);
    if (needs_record({a, b})) {
        auto n = std::make_shared<MatmulNode>();
        n->a = a.detach();
        n->b = b.detach();
        n->d = d;
        record(n, {a, b}, {c});
    }
    return c;
}

namespace {

struct LinearNode : Node {
    Tensor x, weight;  // detached inputs
    int64_t rows = 0, in = 0, out = 0;
    const char* name() const override { return "linear"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        const Tensor g = in_dtype(grads[0], x.dtype());  // [rows, out] in memory
        if (!g.defined()) return {Tensor(), Tensor(), Tensor()};
        Tensor dx, dw, db;
        if (needs[0]) {  // dx [rows, in] = dy [rows, out] · W [out, in]
            dx = empty(x.shape(), x.dtype(), x.device());
            run_gemm(kernels::gemm_params(rows, in, out), g, weight, dx);
        }
        if (needs[1]) {  // dW [out, in] = dyᵀ [out, rows] · x [rows, in]
            dw = empty(weight.shape(), weight.dtype(), weight.device());
            run_gemm(kernels::gemm_params(out, in, rows, true, false), g, x, dw);
        }
        if (needs.size() > 2 && needs[2]) db = column_sum(g, rows, out);
        return {dx, dw, db};
    }
    void release() override {
        x = Tensor();
        weight = Tensor();
    }
};

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    SSL_PROFILE_OP("linear");
    check_defined("linear", x, "x");
    check_defined("linear", weight, "weight");
    check_same_device("linear", x, weight);
    check_same_dtype("linear", x, weight);
    check_gemm_dtype("linear", x);
    SSL_CHECK_SHAPE(weight.dim() == 2, "linear: weight must be [out, in], got ", shape_str(weight.shape()));
    const int64_t out = weight.size(0), in = weight.size(1);
    SSL_CHECK_SHAPE(x.dim() >= 1 && x.size(-1) == in, "linear: x ", shape_str(x.shape()),
                    " does not end in the weight's in-features: weight ", shape_str(weight.shape()));
    if (bias.defined()) {
        check_same_device("linear", x, bias);
        check_same_dtype("linear", x, bias);
        SSL_CHECK_SHAPE(bias.dim() == 1 && bias.size(0) == out, "linear: bias ", shape_str(bias.shape()),
                        " does not match weight ", shape_str(weight.shape()), " (expected [", out, "])");
    }
    const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    Shape out_shape = x.shape();
    out_shape.back() = out;
    Tensor y = empty(out_shape, x.dtype(), x.device());
    float beta = 0.f;
    if (bias.defined()) {  // y = bias rows, then y += x·Wᵀ inside the GEMM
        broadcast_rows(bias, y, rows);
        beta = 1.f;
    }
    run_gemm(kernels::gemm_params(rows, out, in, false, true, beta), x, weight, y);
    if (needs_record({x, weight, bias})) {
        auto n = std::make_shared<LinearNode>();
        n->x = x.detach();
        n->weight = weight.detach();
        n->rows = rows;
        n->in = in;
        n->out = out;
        record(n, {x, weight, bias}, {y});
    }
    return y;
}

}  // namespace sslight
