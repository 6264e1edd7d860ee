// Layer normalisation over the last dim: y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps), with the
// biased variance computed in two passes (mean first, then sum (x - mean)^2). Forward saves mean and rstd per
// row. Backward: xhat = (x - mean) rstd, dxhat = dy w, dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
// is written (=); dw += sum_rows dy xhat and db += sum_rows dy accumulate (+=). w and b may be null (no affine
// for that part; dw / db must then be null too); any of dx, dw, db may be null (not needed).
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct LayerNormParams {
    int64_t rows = 0, C = 0;  // x: (rows, C), normalised over C
    double eps = 1e-6;
};

// x, y: (rows, C), w, b: (C), mean, rstd: (rows)
template <class T>
void layer_norm_fwd_cpu(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean, T* rstd);
// dy, dx: (rows, C), dw, db: (C)
template <class T>
void layer_norm_bwd_cpu(const LayerNormParams& p, const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                        T* dx, T* dw, T* db);

// GPU parameter-gradient plan: rows are split into `splits` chunks; each (chunk, 32-column tile) block writes
// partial sums of dw and db to a float workspace of layer_norm_bwd_workspace() elements, and a second kernel
// sums the partials over chunks in a fixed order and adds them to dw / db (deterministic, no atomics).
inline int64_t layer_norm_bwd_splits(const LayerNormParams& p) {
    constexpr int64_t kTargetBlocks = 1024, kMinRows = 32;
    const int64_t tiles = (p.C + 31) / 32;
    int64_t by_rows = (p.rows + kMinRows - 1) / kMinRows;
    int64_t by_occupancy = tiles >= kTargetBlocks ? 1 : kTargetBlocks / tiles;
    int64_t s = by_rows < by_occupancy ? by_rows : by_occupancy;
    return s < 1 ? 1 : s;
}
inline int64_t layer_norm_bwd_workspace(const LayerNormParams& p) { return 2 * layer_norm_bwd_splits(p) * p.C; }

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16, f32 math); mean and rstd are f32. `work`: layer_norm_bwd_workspace(p)
// floats on the device (needed when dw or db is requested).
SSL_GPU_DECLARE(
    template <class T> void layer_norm_fwd(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y,
                                           float* mean, float* rstd, Stream s);
    template <class T> void layer_norm_bwd(const LayerNormParams& p, const T* x, const T* w, const float* mean,
                                           const float* rstd, const T* dy, T* dx, T* dw, T* db, float* work,
                                           Stream s);
)
