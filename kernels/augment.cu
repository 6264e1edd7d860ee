// CUDA photometric augmentation (kernels/augment.h), f32 math, two launches per batch:
//  1. augment_mean_kernel, one block per image: the contrast op's mean grey level, which depends on the jitter
//     ops that precede contrast in the view's order (flip does not change a mean, so it is skipped here).
//  2. augment_tile_kernel, one block per 32x32 output tile of one image: the tile plus a halo of the blur
//     radius is loaded from the u8 crop with flip, jitter and grayscale applied per pixel into shared memory
//     (46 KB at the largest radius), blurred horizontally into a second shared buffer, then vertically, and
//     solarised, normalised and stored NHWC. Images without blur skip shared memory altogether.
// A 224 px image does not fit in shared memory (600 KB in f32), hence tiles; the halo pixels are recomputed
// from the u8 input, which is cheaper than a round trip through global memory. No gradients.
#include "kernels/augment.h"
#include "kernels/common.cuh"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kTile = 32;                                // output tile side
constexpr int kHaloMax = kTile + 2 * kAugmentMaxBlurRadius;  // 48: tile + halo side at the largest radius
constexpr int kBlock = 256;
constexpr int kMaxGridY = 65535;

struct Norm {
    float mean[3], inv_std[3];
};

// Flip (through the source column sx), u8 -> [0, 1], jitter and grayscale for pixel (y, sx) of the crop.
__device__ __forceinline__ void load_pixel(const uint8_t* img, int W, int y, int sx, const AugmentParams& a,
                                           float mean, float& r, float& g, float& b) {
    const uint8_t* px = img + (static_cast<int64_t>(y) * W + sx) * 3;
    r = __fdiv_rn(static_cast<float>(px[0]), 255.f);  // correctly rounded, as the CPU's x / 255
    g = __fdiv_rn(static_cast<float>(px[1]), 255.f);
    b = __fdiv_rn(static_cast<float>(px[2]), 255.f);
    if (a.jitter_apply) aug_jitter_range(r, g, b, a, mean, 0, 4);
    if (a.gray) r = g = b = aug_gray(r, g, b);
}

template <class T>
__device__ __forceinline__ void store_pixel(T* dst, float r, float g, float b, bool solarize, const Norm& n) {
    if (solarize) r = aug_solarize(r), g = aug_solarize(g), b = aug_solarize(b);
    dst[0] = from_f32<T>((r - n.mean[0]) * n.inv_std[0]);
    dst[1] = from_f32<T>((g - n.mean[1]) * n.inv_std[1]);
    dst[2] = from_f32<T>((b - n.mean[2]) * n.inv_std[2]);
}

__global__ void augment_mean_kernel(const uint8_t* in, const AugmentParams* aug, int HW, float* means) {
    __shared__ float scratch[32];
    const AugmentParams a = aug[blockIdx.x];
    const int cpos = aug_contrast_pos(a);
    if (cpos == 4) {  // uniform over the block: no barrier is skipped by only some threads
        if (threadIdx.x == 0) means[blockIdx.x] = 0.f;
        return;
    }
    const uint8_t* img = in + static_cast<int64_t>(blockIdx.x) * HW * 3;
    float sum = 0.f;
    for (int i = threadIdx.x; i < HW; i += blockDim.x) {
        float r = __fdiv_rn(static_cast<float>(img[i * 3 + 0]), 255.f);
        float g = __fdiv_rn(static_cast<float>(img[i * 3 + 1]), 255.f);
        float b = __fdiv_rn(static_cast<float>(img[i * 3 + 2]), 255.f);
        aug_jitter_range(r, g, b, a, 0.f, 0, cpos);
        sum += aug_gray(r, g, b);
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) means[blockIdx.x] = sum / static_cast<float>(HW);
}

// No blur: one thread per output pixel of the tile, straight from global memory.
template <class T>
__device__ void tile_pointwise(const uint8_t* img, const AugmentParams& a, float mean, int H, int W, int ty0,
                               int tx0, const Norm& n, T* out) {
    for (int i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {
        const int y = ty0 + i / kTile, x = tx0 + i % kTile;
        if (y >= H || x >= W) continue;
        float r, g, b;
        load_pixel(img, W, y, a.flip ? W - 1 - x : x, a, mean, r, g, b);
        store_pixel(out + (static_cast<int64_t>(y) * W + x) * 3, r, g, b, a.solarize != 0, n);
    }
}

template <class T>
__global__ void augment_tile_kernel(const uint8_t* in, const AugmentParams* aug, const float* means, int H, int W,
                                    Norm n, T* out) {
    __shared__ float s_in[3][kHaloMax * kHaloMax];  // tile + halo after flip/jitter/gray, planar
    __shared__ float s_h[3][kHaloMax * kTile];      // after the horizontal pass
    __shared__ float s_w[kAugmentMaxBlurRadius + 1];
    const int b_img = blockIdx.y;
    const AugmentParams a = aug[b_img];
    const float mean = means[b_img];
    const int tiles_x = (W + kTile - 1) / kTile;
    const int ty0 = (blockIdx.x / tiles_x) * kTile, tx0 = (blockIdx.x % tiles_x) * kTile;
    const uint8_t* img = in + static_cast<int64_t>(b_img) * H * W * 3;
    T* dst = out + static_cast<int64_t>(b_img) * H * W * 3;
    const int R = aug_blur_radius(a);
    if (R == 0) {  // uniform over the block
        tile_pointwise(img, a, mean, H, W, ty0, tx0, n, dst);
        return;
    }
    const int np = a.gray ? 1 : 3;  // a grey image carries one plane
    const int hw = kTile + 2 * R;   // halo side at this radius
    if (threadIdx.x == 0) aug_gauss_weights(a.blur_sigma, R, s_w);
    for (int i = threadIdx.x; i < hw * hw; i += blockDim.x) {
        const int y = aug_reflect(ty0 - R + i / hw, H), x = aug_reflect(tx0 - R + i % hw, W);
        float r, g, b;
        load_pixel(img, W, y, a.flip ? W - 1 - x : x, a, mean, r, g, b);
        s_in[0][i] = r;
        if (np == 3) s_in[1][i] = g, s_in[2][i] = b;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hw * kTile; i += blockDim.x) {
        const int ly = i / kTile, lx = i % kTile + R;
        for (int c = 0; c < np; ++c) {
            const float* row = s_in[c] + ly * hw;
            float acc = s_w[0] * row[lx];
            for (int k = 1; k <= R; ++k) acc += s_w[k] * (row[lx - k] + row[lx + k]);
            s_h[c][i] = acc;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {
        const int ly = i / kTile, lx = i % kTile, y = ty0 + ly, x = tx0 + lx;
        if (y >= H || x >= W) continue;
        float v[3];
        for (int c = 0; c < np; ++c) {
            const float* col = s_h[c] + (ly + R) * kTile + lx;
            float acc = s_w[0] * col[0];
            for (int k = 1; k <= R; ++k) acc += s_w[k] * (col[-k * kTile] + col[k * kTile]);
            v[c] = acc;
        }
        if (np == 1) v[1] = v[2] = v[0];
        store_pixel(dst + (static_cast<int64_t>(y) * W + x) * 3, v[0], v[1], v[2], a.solarize != 0, n);
    }
}

}  // namespace

template <class T>
void augment_fwd(const AugmentBatch& p, const uint8_t* in, const AugmentParams* aug, float* mean_ws, T* out,
                 Stream s) {
    if (p.B <= 0 || p.H <= 0 || p.W <= 0) return;
    Norm n;
    for (int c = 0; c < 3; ++c) n.mean[c] = p.mean[c], n.inv_std[c] = static_cast<float>(1.0 / p.std[c]);
    const int tiles = ((p.H + kTile - 1) / kTile) * ((p.W + kTile - 1) / kTile);
    const int64_t img = static_cast<int64_t>(p.H) * p.W * 3;
    for (int b0 = 0; b0 < p.B; b0 += kMaxGridY) {  // grid.y holds at most 65535 images per launch
        const int nb = p.B - b0 < kMaxGridY ? p.B - b0 : kMaxGridY;
        launch("augment_mean_kernel", augment_mean_kernel, dim3(nb), dim3(kBlock), 0, s, in + b0 * img, aug + b0,
               p.H * p.W, mean_ws + b0);
        launch("augment_tile_kernel", augment_tile_kernel<dev_t<T>>, dim3(tiles, nb), dim3(kBlock), 0, s,
               in + b0 * img, aug + b0, static_cast<const float*>(mean_ws + b0), p.H, p.W, n, dev_ptr(out) + b0 * img);
    }
}

template void augment_fwd<float>(const AugmentBatch&, const uint8_t*, const AugmentParams*, float*, float*, Stream);
template void augment_fwd<bf16>(const AugmentBatch&, const uint8_t*, const AugmentParams*, float*, bf16*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
