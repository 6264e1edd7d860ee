// General matrix multiply on row-major matrices, batched with strides: for each b < batch,
//   C_b = alpha * op(A_b) · op(B_b) + beta * C_b,  op(X) = X or Xᵀ,  op(A_b): (M, K), op(B_b): (K, N).
// CPU: OpenBLAS (cblas_?gemm, row-major), OpenMP over the batch when the matrices are small. GPU: cuBLAS
// (cublasGemmStridedBatchedEx; row-major is mapped to column-major by swapping the operands). No gradients
// here: the ops in engine/ops/matmul.cpp build theirs from further GEMMs. beta = 0 writes C (=), beta = 1
// accumulates (+=); with beta = 0, C's previous contents are never read (NaN-safe).
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct GemmParams {
    int64_t batch = 1;
    int64_t M = 0, N = 0, K = 0;
    bool trans_a = false;  // A_b is stored (K, M) and used transposed
    bool trans_b = false;  // B_b is stored (N, K) and used transposed
    // Elements between consecutive matrices of the batch. 0 shares one matrix across the batch (A or B
    // only; C's stride must be >= M * N when batch > 1).
    int64_t stride_a = 0, stride_b = 0, stride_c = 0;
    float alpha = 1.f, beta = 0.f;
    // GPU f32 only: let cuBLAS use TF32 tensor cores (10-bit mantissa products, ~1e-3 relative error).
    // Off by default so that f32 GEMMs match the CPU reference to f32 accuracy.
    bool allow_tf32 = false;
};

// Parameters of one plain (unbatched, contiguous) GEMM.
inline GemmParams gemm_params(int64_t M, int64_t N, int64_t K, bool trans_a = false, bool trans_b = false,
                              float beta = 0.f) {
    GemmParams p;
    p.M = M;
    p.N = N;
    p.K = K;
    p.trans_a = trans_a;
    p.trans_b = trans_b;
    p.stride_a = M * K;
    p.stride_b = K * N;
    p.stride_c = M * N;
    p.beta = beta;
    return p;
}

// a: (batch, M, K) or (batch, K, M) with trans_a, b: (batch, K, N) or (batch, N, K) with trans_b,
// c: (batch, M, N); a batch stride of 0 means one shared matrix. T = float, double.
template <class T>
void gemm_cpu(const GemmParams& p, const T* a, const T* b, T* c);

}  // namespace sslight::kernels

// cuBLAS launchers: compiled only in CUDA builds (kernels/gemm_cuda.cpp); there is no emulated variant
// because cuBLAS is a library, not our kernel. `cublas_handle` is runtime::cublas_handle(device), already
// bound to the device's compute stream. T = float (FP32 compute, TF32 only with allow_tf32) and bf16
// (bf16 storage, f32 accumulation and f32 alpha/beta). Pointers as for gemm_cpu.
namespace sslight::kernels::cuda {
template <class T>
void gemm(const GemmParams& p, const T* a, const T* b, T* c, void* cublas_handle);
}  // namespace sslight::kernels::cuda
