// CPU GEMM (also the reference for the GPU path): cblas_sgemm / cblas_dgemm in row-major order, one call
// per batch entry. Small matrices (M*N*K <= 64^3, where OpenBLAS itself runs single-threaded) are spread
// over OpenMP threads by batch entry; larger ones run one after another, each multi-threaded by OpenBLAS.
// Every entry writes its own C_b, so the result does not depend on the thread count.
#include <cblas.h>

#include <algorithm>

#include "engine/check.h"
#include "kernels/gemm.h"

namespace sslight::kernels {
namespace {

// OpenBLAS's own single-thread cut-off for ?gemm (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD).
constexpr int64_t kSmallGemm = 64 * 64 * 64;

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc) {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const double* a, int lda,
               const double* b, int ldb, float beta, double* c, int ldc) {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// K == 0: op(A)·op(B) is the zero matrix, so C = beta * C (beta = 0 writes zeros, never reads C).
template <class T>
void scale_c(const GemmParams& p, T* c) {
    for (int64_t bi = 0; bi < p.batch; ++bi) {
        T* cb = c + bi * p.stride_c;
        for (int64_t i = 0; i < p.M * p.N; ++i) cb[i] = p.beta == 0.f ? T(0) : static_cast<T>(p.beta * cb[i]);
    }
}

}  // namespace

template <class T>
void gemm_cpu(const GemmParams& p, const T* a, const T* b, T* c) {
    SSL_CHECK(p.batch >= 0 && p.M >= 0 && p.N >= 0 && p.K >= 0, "gemm: negative size (batch ", p.batch, ", M ",
              p.M, ", N ", p.N, ", K ", p.K, ")");
    SSL_CHECK(p.batch <= 1 || p.stride_c >= p.M * p.N, "gemm: C batch stride ", p.stride_c, " < M*N = ", p.M * p.N);
    const int64_t int_max = 0x7fffffff;
    SSL_CHECK(p.M <= int_max && p.N <= int_max && p.K <= int_max, "gemm: dimension over 2^31 (M ", p.M, ", N ",
              p.N, ", K ", p.K, ")");
    if (p.batch == 0 || p.M == 0 || p.N == 0) return;
    if (p.K == 0) return scale_c(p, c);
    const int m = static_cast<int>(p.M), n = static_cast<int>(p.N), k = static_cast<int>(p.K);
    const CBLAS_TRANSPOSE ta = p.trans_a ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE tb = p.trans_b ? CblasTrans : CblasNoTrans;
    const int lda = std::max(1, p.trans_a ? m : k), ldb = std::max(1, p.trans_b ? k : n), ldc = std::max(1, n);
    const bool small = p.batch > 1 && p.M * p.N * p.K <= kSmallGemm;
#pragma omp parallel for schedule(static) if (small)
    for (int64_t bi = 0; bi < p.batch; ++bi) {
        blas_gemm(ta, tb, m, n, k, p.alpha, a + bi * p.stride_a, lda, b + bi * p.stride_b, ldb, p.beta,
                  c + bi * p.stride_c, ldc);
    }
}

template void gemm_cpu<float>(const GemmParams&, const float*, const float*, float*);
template void gemm_cpu<double>(const GemmParams&, const double*, const double*, double*);

}  // namespace sslight::kernels
