// cuBLAS GEMM on row-major matrices (CUDA builds only). A row-major (R, C) matrix is the column-major
// (C, R) matrix with the same leading dimension, so C = op(A)·op(B) in row-major is Cᵀ = op(B)ᵀ·op(A)ᵀ in
// column-major: one cublasGemmStridedBatchedEx call with the operands swapped and the same transposes.
// f32 uses CUBLAS_COMPUTE_32F (no TF32 unless GemmParams::allow_tf32); bf16 stores bf16 and accumulates in
// f32. The runtime's handle keeps cuBLAS's default math mode, so no reduced precision sneaks in.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/gemm.h"

namespace sslight::kernels::cuda {
namespace {

// cuBLAS takes the batch count as an int; chunks also stay clear of per-launch grid limits.
constexpr int64_t kMaxBatchPerCall = 65535;

template <class T>
struct CudaType;
template <>
struct CudaType<float> {
    static constexpr cudaDataType_t value = CUDA_R_32F;
};
template <>
struct CudaType<bf16> {
    static constexpr cudaDataType_t value = CUDA_R_16BF;
};

// K == 0: C = beta * C; only beta 0 (zeros) and 1 (unchanged) occur in the engine.
template <class T>
void gemm_empty_k(const GemmParams& p, T* c, cublasHandle_t h) {
    if (p.beta == 1.f) return;
    SSL_CHECK(p.beta == 0.f, "gemm: K = 0 with beta ", p.beta, " is not supported on the GPU");
    cudaStream_t s = nullptr;
    CUBLAS_CHECK(cublasGetStream(h, &s));
    const size_t bytes = static_cast<size_t>(p.M * p.N) * sizeof(T);
    for (int64_t bi = 0; bi < p.batch; ++bi) CUDA_CHECK(cudaMemsetAsync(c + bi * p.stride_c, 0, bytes, s));
}

}  // namespace

template <class T>
void gemm(const GemmParams& p, const T* a, const T* b, T* c, void* cublas_handle) {
    SSL_CHECK(p.batch >= 0 && p.M >= 0 && p.N >= 0 && p.K >= 0, "gemm: negative size (batch ", p.batch, ", M ",
              p.M, ", N ", p.N, ", K ", p.K, ")");
    SSL_CHECK(p.batch <= 1 || p.stride_c >= p.M * p.N, "gemm: C batch stride ", p.stride_c, " < M*N = ", p.M * p.N);
    const int64_t int_max = 0x7fffffff;
    SSL_CHECK(p.M <= int_max && p.N <= int_max && p.K <= int_max, "gemm: dimension over 2^31 (M ", p.M, ", N ",
              p.N, ", K ", p.K, ")");
    SSL_CHECK(cublas_handle != nullptr, "gemm: no cuBLAS handle");
    auto h = static_cast<cublasHandle_t>(cublas_handle);
    if (p.batch == 0 || p.M == 0 || p.N == 0) return;
    if (p.K == 0) return gemm_empty_k(p, c, h);

    const int m = static_cast<int>(p.M), n = static_cast<int>(p.N), k = static_cast<int>(p.K);
    const int lda = std::max(1, p.trans_a ? m : k), ldb = std::max(1, p.trans_b ? k : n), ldc = std::max(1, n);
    const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cudaDataType_t type = CudaType<T>::value;
    const cublasComputeType_t compute =
        (std::is_same<T, float>::value && p.allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const float alpha = p.alpha, beta = p.beta;
    for (int64_t b0 = 0; b0 < p.batch; b0 += kMaxBatchPerCall) {
        const int count = static_cast<int>(std::min(kMaxBatchPerCall, p.batch - b0));
        // Column-major view: (N x M) = op(B)ᵀ (N x K) · op(A)ᵀ (K x M).
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op_b, op_a, n, m, k, &alpha, b + b0 * p.stride_b, type, ldb,
                                                p.stride_b, a + b0 * p.stride_a, type, lda, p.stride_a, &beta,
                                                c + b0 * p.stride_c, type, ldc, p.stride_c, count, compute,
                                                CUBLAS_GEMM_DEFAULT));
    }
}

template void gemm<float>(const GemmParams&, const float*, const float*, float*, void*);
template void gemm<bf16>(const GemmParams&, const bf16*, const bf16*, bf16*, void*);

}  // namespace sslight::kernels::cuda
