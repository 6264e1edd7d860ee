// CPU grouped 2-D convolution in NHWC (also the reference for the cuDNN path): im2col per group into a
// (rows = images·Ho·Wo, cols = kh·kw·Cg) matrix, then one cblas GEMM per group with all images of a chunk
// batched into the rows. Chunks hold whole images; the im2col buffer stays under p.cpu_col_budget (64 MiB).
// 1x1 stride-1 unpadded convolutions use the input itself as the matrix. The input gradient is a col2im
// *gather* (each input pixel sums the taps that read it), so it is race-free and deterministic.
// Every kernel writes (=) its output; see kernels/conv2d.h.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/check.h"
#include "kernels/conv2d.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kBiasRowBlock = 1024;   // rows per partial sum of the bias gradient
constexpr int64_t kParallelMin = 1 << 15;  // elements below which an OpenMP region costs more than it saves

void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                int(k), 1.f, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
               int64_t ldb, double beta, double* c, int64_t ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                int(k), 1.0, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// 1x1, stride 1, no padding: the (N·H·W, C) input is already the im2col matrix of every group.
bool is_pointwise(const Conv2dParams& p) {
    return p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// Whole images per chunk such that the im2col buffer stays under p.cpu_col_budget (at least one image).
template <class T>
int64_t images_per_chunk(const Conv2dParams& p) {
    const int64_t per_image = p.Ho * p.Wo * p.taps_cols() * int64_t(sizeof(T));
    return std::max<int64_t>(1, std::min<int64_t>(p.N, p.cpu_col_budget / std::max<int64_t>(per_image, 1)));
}

// cols[r, (i·kw + j)·Cg + c] = x[n, oh·sh - ph + i·dh, ow·sw - pw + j·dw, g·Cg + c] (0 outside the image),
// r = ((n - n0)·Ho + oh)·Wo + ow for images n0 .. n0 + nb - 1.
template <class T>
void im2col(const Conv2dParams& p, const T* x, int64_t n0, int64_t nb, int64_t g, T* cols) {
    const int64_t Cg = p.Cg(), KK = p.taps_cols(), rows = nb * p.Ho * p.Wo;
#pragma omp parallel for schedule(static) if (rows * KK > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t ow = r % p.Wo, oh = (r / p.Wo) % p.Ho, n = n0 + r / (p.Wo * p.Ho);
        T* dst = cols + r * KK;
        for (int64_t i = 0; i < p.kh; ++i) {
            const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dil_h;
            for (int64_t j = 0; j < p.kw; ++j, dst += Cg) {
                const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dil_w;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) {
                    std::fill(dst, dst + Cg, T(0));
                } else {
                    std::memcpy(dst, x + ((n * p.H + ih) * p.W + iw) * p.C + g * Cg, sizeof(T) * Cg);
                }
            }
        }
    }
}

// The adjoint of im2col for group g, as a gather: dx[n, ih, iw, g·Cg + c] = sum over the taps (i, j) and
// output positions (oh, ow) with oh·sh - ph + i·dh = ih and ow·sw - pw + j·dw = iw of dcols[r, tap, c].
template <class T>
void col2im(const Conv2dParams& p, const T* dcols, int64_t n0, int64_t nb, int64_t g, T* dx) {
    const int64_t Cg = p.Cg(), KK = p.taps_cols();
#pragma omp parallel for collapse(2) schedule(static) if (nb * p.Ho * p.Wo * KK > kParallelMin)
    for (int64_t nl = 0; nl < nb; ++nl) {
        for (int64_t ih = 0; ih < p.H; ++ih) {
            for (int64_t iw = 0; iw < p.W; ++iw) {
                T* dst = dx + (((n0 + nl) * p.H + ih) * p.W + iw) * p.C + g * Cg;
                std::fill(dst, dst + Cg, T(0));
                for (int64_t i = 0; i < p.kh; ++i) {
                    const int64_t th = ih + p.pad_h - i * p.dil_h;
                    if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.Ho) continue;
                    const int64_t oh = th / p.stride_h;
                    for (int64_t j = 0; j < p.kw; ++j) {
                        const int64_t tw = iw + p.pad_w - j * p.dil_w;
                        if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.Wo) continue;
                        const int64_t ow = tw / p.stride_w;
                        const T* src = dcols + ((nl * p.Ho + oh) * p.Wo + ow) * KK + (i * p.kw + j) * Cg;
                        for (int64_t c = 0; c < Cg; ++c) dst[c] += src[c];
                    }
                }
            }
        }
    }
}

void check_params(const Conv2dParams& p) {
    SSL_CHECK(p.groups >= 1 && p.C % p.groups == 0 && p.K % p.groups == 0, "conv2d kernel: groups ", p.groups,
              " must divide C ", p.C, " and K ", p.K);
    SSL_CHECK(p.stride_h >= 1 && p.stride_w >= 1 && p.dil_h >= 1 && p.dil_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
              "conv2d kernel: invalid stride/dilation/padding");
    SSL_CHECK(p.Ho == conv2d_out_size(p.H, p.kh, p.stride_h, p.pad_h, p.dil_h) &&
                  p.Wo == conv2d_out_size(p.W, p.kw, p.stride_w, p.pad_w, p.dil_w),
              "conv2d kernel: output size ", p.Ho, "x", p.Wo, " does not match the input and arguments");
}

}  // namespace

template <class T>
void conv2d_fwd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y) {
    check_params(p);
    const int64_t Cg = p.Cg(), Kg = p.Kg(), KK = p.taps_cols(), img_rows = p.Ho * p.Wo, M = p.N * img_rows;
    if (M == 0 || p.K == 0) return;
    T beta = 0;
    if (bias) {
#pragma omp parallel for schedule(static) if (M * p.K > kParallelMin)
        for (int64_t r = 0; r < M; ++r) std::memcpy(y + r * p.K, bias, sizeof(T) * p.K);
        beta = 1;
    } else if (KK == 0) {
        std::fill(y, y + M * p.K, T(0));
    }
    if (KK == 0) return;
    if (is_pointwise(p)) {
        for (int64_t g = 0; g < p.groups; ++g)
            blas_gemm(false, true, M, Kg, Cg, x + g * Cg, p.C, w + g * Kg * KK, KK, beta, y + g * Kg, p.K);
        return;
    }
    const int64_t chunk = images_per_chunk<T>(p);
    std::vector<T> cols(static_cast<size_t>(chunk * img_rows * KK));
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, p.N - n0);
        for (int64_t g = 0; g < p.groups; ++g) {
            im2col(p, x, n0, nb, g, cols.data());
            blas_gemm(false, true, nb * img_rows, Kg, KK, cols.data(), KK, w + g * Kg * KK, KK, beta,
                      y + n0 * img_rows * p.K + g * Kg, p.K);
        }
    }
}

template <class T>
void conv2d_bwd_data_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
    check_params(p);
    const int64_t Cg = p.Cg(), Kg = p.Kg(), KK = p.taps_cols(), img_rows = p.Ho * p.Wo;
    if (p.N * p.H * p.W * p.C == 0) return;
    if (p.K == 0 || img_rows == 0) {
        std::fill(dx, dx + p.N * p.H * p.W * p.C, T(0));
        return;
    }
    if (is_pointwise(p)) {
        for (int64_t g = 0; g < p.groups; ++g)
            blas_gemm(false, false, p.N * img_rows, Cg, Kg, dy + g * Kg, p.K, w + g * Kg * KK, KK, T(0), dx + g * Cg,
                      p.C);
        return;
    }
    const int64_t chunk = images_per_chunk<T>(p);
    std::vector<T> dcols(static_cast<size_t>(chunk * img_rows * KK));
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, p.N - n0);
        for (int64_t g = 0; g < p.groups; ++g) {
            // dcols (rows, KK) = dy_g (rows, Kg) · W_g (Kg, KK)
            blas_gemm(false, false, nb * img_rows, KK, Kg, dy + n0 * img_rows * p.K + g * Kg, p.K, w + g * Kg * KK,
                      KK, T(0), dcols.data(), KK);
            col2im(p, dcols.data(), n0, nb, g, dx);
        }
    }
}

template <class T>
void conv2d_bwd_weight_cpu(const Conv2dParams& p, const T* x, const T* dy, T* dw) {
    check_params(p);
    const int64_t Cg = p.Cg(), Kg = p.Kg(), KK = p.taps_cols(), img_rows = p.Ho * p.Wo;
    if (p.K * KK == 0) return;
    if (p.N * img_rows == 0) {
        std::fill(dw, dw + p.K * KK, T(0));
        return;
    }
    if (is_pointwise(p)) {
        // dW_g (Kg, Cg) = dy_gᵀ (Kg, M) · x_g (M, Cg)
        for (int64_t g = 0; g < p.groups; ++g)
            blas_gemm(true, false, Kg, Cg, p.N * img_rows, dy + g * Kg, p.K, x + g * Cg, p.C, T(0), dw + g * Kg * KK,
                      KK);
        return;
    }
    const int64_t chunk = images_per_chunk<T>(p);
    std::vector<T> cols(static_cast<size_t>(chunk * img_rows * KK));
    for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, p.N - n0);
        const T beta = n0 == 0 ? T(0) : T(1);  // the first chunk writes, later ones accumulate
        for (int64_t g = 0; g < p.groups; ++g) {
            im2col(p, x, n0, nb, g, cols.data());
            blas_gemm(true, false, Kg, KK, nb * img_rows, dy + n0 * img_rows * p.K + g * Kg, p.K, cols.data(), KK,
                      beta, dw + g * Kg * KK, KK);
        }
    }
}

template <class T>
void conv2d_bwd_bias_cpu(const Conv2dParams& p, const T* dy, T* db) {
    const int64_t M = p.N * p.Ho * p.Wo, K = p.K, blocks = (M + kBiasRowBlock - 1) / kBiasRowBlock;
    // Partial sums over fixed row blocks, then summed in block order: the result does not depend on the
    // number of threads.
    std::vector<double> partial(static_cast<size_t>(blocks * K), 0.0);
#pragma omp parallel for schedule(static) if (M * K > kParallelMin)
    for (int64_t b = 0; b < blocks; ++b) {
        double* acc = partial.data() + b * K;
        for (int64_t r = b * kBiasRowBlock; r < std::min(M, (b + 1) * kBiasRowBlock); ++r)
            for (int64_t k = 0; k < K; ++k) acc[k] += static_cast<double>(dy[r * K + k]);
    }
    for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t b = 0; b < blocks; ++b) s += partial[b * K + k];
        db[k] = static_cast<T>(s);
    }
}

template void conv2d_fwd_cpu<float>(const Conv2dParams&, const float*, const float*, const float*, float*);
template void conv2d_fwd_cpu<double>(const Conv2dParams&, const double*, const double*, const double*, double*);
template void conv2d_bwd_data_cpu<float>(const Conv2dParams&, const float*, const float*, float*);
template void conv2d_bwd_data_cpu<double>(const Conv2dParams&, const double*, const double*, double*);
template void conv2d_bwd_weight_cpu<float>(const Conv2dParams&, const float*, const float*, float*);
template void conv2d_bwd_weight_cpu<double>(const Conv2dParams&, const double*, const double*, double*);
template void conv2d_bwd_bias_cpu<float>(const Conv2dParams&, const float*, float*);
template void conv2d_bwd_bias_cpu<double>(const Conv2dParams&, const double*, double*);

}  // namespace sslight::kernels
