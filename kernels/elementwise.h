// Element-wise kernels. Unary: y = f(x) for affine s0*x + s1, s0/x, exp, log, sqrt, x^p, |x|, clamp, relu,
// relu6, gelu (exact erf form), sigmoid, tanh; backward dx = dy * f'(x), from the saved input or, where
// cheaper (exp, sqrt, sigmoid, tanh), the saved output. Binary: out = a op b with b broadcast as b[i % c]
// (c = n: same shape, c = 1: scalar, c = last dim: per-channel vector); backward writes (=) da and db, db of
// a broadcast b summed over the broadcast rows by a deterministic two-pass column reduction (no atomics).
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

enum class UnaryOp : int32_t { affine, rdiv, exp, log, sqrt, pow, abs, clamp, relu, relu6, gelu, sigmoid, tanh };

// s0, s1 by op: affine y = s0 * x + s1; rdiv y = s0 / x; pow y = x^s0; clamp y = min(max(x, s0), s1).
struct UnaryParams {
    int64_t n = 0;  // elements
    UnaryOp op = UnaryOp::affine;
    double s0 = 1.0, s1 = 0.0;
};

// What unary backward reads as `saved`: the output y (exp, sqrt, sigmoid, tanh), nothing (affine), else x.
inline bool unary_saves_output(UnaryOp op) {
    return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::sigmoid || op == UnaryOp::tanh;
}
inline bool unary_needs_saved(UnaryOp op) { return op != UnaryOp::affine; }

enum class BinaryOp : int32_t { add, mul, div };

// out[i] = a[i] + alpha * b[i % c] (add; sub is alpha = -1), a[i] * b[i % c] (mul), a[i] / b[i % c] (div).
// c is n (same shape), 1 (scalar b) or the size of a's last dim (n % c == 0).
struct BinaryParams {
    int64_t n = 0;  // elements of a and out
    int64_t c = 0;  // elements of b
    BinaryOp op = BinaryOp::add;
    double alpha = 1.0;
};

inline bool binary_broadcast(const BinaryParams& p) { return p.c != p.n; }

// Row chunks of the GPU column reduction of a broadcast db (a function of the shape only, so the summation
// order never depends on the device) and the f32 workspace it needs: chunks * c floats (0 when c == n).
inline int64_t binary_reduce_chunks(const BinaryParams& p) {
    const int64_t rows = p.c > 0 ? p.n / p.c : 0;
    const int64_t k = (rows + 63) / 64;
    return k < 1 ? 1 : (k > 1024 ? 1024 : k);
}
inline int64_t binary_bwd_workspace(const BinaryParams& p) {
    return binary_broadcast(p) ? binary_reduce_chunks(p) * p.c : 0;
}

// x, y, saved, dy, dx: (n). In-place (y == x) is allowed.
template <class T>
void unary_fwd_cpu(const UnaryParams& p, const T* x, T* y);
// saved: x or y as unary_saves_output says (may be null for affine). dx is written (=).
template <class T>
void unary_bwd_cpu(const UnaryParams& p, const T* saved, const T* dy, T* dx);

// a, out: (n); b: (c). In-place (out == a) is allowed.
template <class T>
void binary_fwd_cpu(const BinaryParams& p, const T* a, const T* b, T* out);
// dy, da: (n); db: (c). da or db null: not computed. Reads a only for db of mul/div, b only for mul/div.
// Both written (=); a broadcast db is the sum over the n / c rows.
template <class T>
void binary_bwd_cpu(const BinaryParams& p, const T* a, const T* b, const T* dy, T* da, T* db);

}  // namespace sslight::kernels

// GPU launchers: T = float or bf16 (f32 math). Same pointer shapes and contracts as the CPU functions;
// binary_bwd needs `workspace` of binary_bwd_workspace(p) floats when b is broadcast and db is wanted.
SSL_GPU_DECLARE(
    template <class T> void unary_fwd(const UnaryParams& p, const T* x, T* y, Stream s);
    template <class T> void unary_bwd(const UnaryParams& p, const T* saved, const T* dy, T* dx, Stream s);
    template <class T> void binary_fwd(const BinaryParams& p, const T* a, const T* b, T* out, Stream s);
    template <class T>
    void binary_bwd(const BinaryParams& p, const T* a, const T* b, const T* dy, T* da, T* db, float* workspace,
                    Stream s);
)
