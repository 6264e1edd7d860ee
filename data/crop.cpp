// RandomResizedCrop sampling (torchvision semantics) on Philox streams, and Pillow's antialiased bicubic
// resampling (libImaging/Resample.c: precompute_coeffs, normalize_coeffs_8bpc, the two 8-bit passes)
// reproduced to the bit: same double-precision taps, same 22-bit rounding, same clipping. The vertical pass
// accumulates whole rows at a time (integer sums, so the order does not change the result) to vectorise.
#include "data/crop.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/check.h"
#include "kernels/philox.h"

namespace sslight::data {

// ---- Rng ---------------------------------------------------------------------------------------------------
Rng Rng::for_view(uint64_t seed, int64_t epoch, int64_t sample, int64_t view) {
    return Rng(
        derive(seed, {static_cast<uint64_t>(epoch), static_cast<uint64_t>(sample), static_cast<uint64_t>(view)}));
}

uint32_t Rng::next_u32() {
    if (lane_ == 4) {
        const philox::U4 b = philox::block(key_.seed, key_.stream, block_++);
        std::memcpy(words_, b.v, sizeof(words_));
        lane_ = 0;
    }
    return words_[lane_++];
}

uint64_t Rng::next_u64() {
    const uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

int64_t Rng::randint(int64_t lo, int64_t hi) {
    SSL_CHECK(lo < hi, "Rng::randint: empty range [", lo, ", ", hi, ")");
    const uint64_t range = static_cast<uint64_t>(hi - lo);
    const uint64_t threshold = (0 - range) % range;  // reject the biased low end of [0, 2^64)
    for (;;) {
        const uint64_t r = next_u64();
        if (r >= threshold) return lo + static_cast<int64_t>(r % range);
    }
}

// ---- RandomResizedCrop -------------------------------------------------------------------------------------
namespace {

// Python's round(): halves go to the even neighbour.
int round_half_even(double x) {
    double r = std::round(x);
    if (std::fabs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
    return static_cast<int>(r);
}

}  // namespace

CropBox random_resized_crop_box(int width, int height, double scale_lo, double scale_hi, double ratio_lo,
                                double ratio_hi, Rng& rng, bool* fallback) {
    SSL_CHECK(width > 0 && height > 0, "random_resized_crop_box: empty image ", width, "x", height);
    SSL_CHECK(scale_lo > 0 && scale_lo <= scale_hi && ratio_lo > 0 && ratio_lo <= ratio_hi,
              "random_resized_crop_box: bad ranges scale (", scale_lo, ", ", scale_hi, ") ratio (", ratio_lo, ", ",
              ratio_hi, ")");
    const double area = static_cast<double>(width) * height;
    const double log_lo = std::log(ratio_lo), log_hi = std::log(ratio_hi);
    for (int attempt = 0; attempt < 10; ++attempt) {
        const double target_area = area * rng.uniform(scale_lo, scale_hi);
        const double aspect = std::exp(rng.uniform(log_lo, log_hi));
        const int w = round_half_even(std::sqrt(target_area * aspect));
        const int h = round_half_even(std::sqrt(target_area / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            const int top = static_cast<int>(rng.randint(0, height - h + 1));
            const int left = static_cast<int>(rng.randint(0, width - w + 1));
            if (fallback) *fallback = false;
            return {left, top, w, h};
        }
    }
    const double in_ratio = static_cast<double>(width) / height;
    const double rmin = std::min(ratio_lo, ratio_hi), rmax = std::max(ratio_lo, ratio_hi);
    int w = width, h = height;
    if (in_ratio < rmin) {
        h = round_half_even(w / rmin);
    } else if (in_ratio > rmax) {
        w = round_half_even(h * rmax);
    }
    if (fallback) *fallback = true;
    return {(width - w) / 2, (height - h) / 2, w, h};
}

// ---- Pillow's resampling -----------------------------------------------------------------------------------
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

inline uint8_t clip8(int32_t v) {
    const int32_t s = v >> kPrecisionBits;  // arithmetic shift: floor, as Pillow's lookup index
    return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

// One axis of a resize: outputs [first, first + count) of an out_size-sample resize of the window
// [in0, in1) of in_size input samples.
struct Axis {
    int in_size;
    double in0, in1;
    int out_size, first, count;
    bool identity() const { return out_size == in_size && in0 == 0.0 && in1 == out_size; }
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the outputs of `ax`: per output (first tap, taps)
// in `bounds` and ksize 22-bit coefficients in `k`. The window is float, as Pillow's box.
int precompute_taps(const Axis& ax, std::vector<int>& bounds, std::vector<int32_t>& k) {
    const float in0 = static_cast<float>(ax.in0), in1 = static_cast<float>(ax.in1);
    const double scale = static_cast<double>(in1 - in0) / ax.out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;
    const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    bounds.assign(static_cast<size_t>(ax.count) * 2, 0);
    k.assign(static_cast<size_t>(ax.count) * ksize, 0);
    std::vector<double> w(ksize);
    for (int i = 0; i < ax.count; ++i) {
        const int xx = ax.first + i;
        const double center = in0 + (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > ax.in_size) xmax = ax.in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < xmax; ++x) {
            const double v = ww != 0.0 ? w[x] / ww : w[x];
            k[static_cast<size_t>(i) * ksize + x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                                                          : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
        }
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
    return ksize;
}

// acc[i] += row[i] * c over n values: the inner loop of both passes, built for AVX2 and for plain x86-64 and
// picked at load time (32-bit products: the 22-bit taps leave no room for 16-bit tricks, and exactness matters).
__attribute__((target_clones("avx2", "default"))) void mac_row(int32_t* acc, const uint8_t* row, int32_t c, int n) {
    for (int i = 0; i < n; ++i) acc[i] += row[i] * c;
}

__attribute__((target_clones("avx2", "default"))) void clip_row(const int32_t* acc, uint8_t* out, int n) {
    for (int i = 0; i < n; ++i) out[i] = clip8(acc[i]);
}

// Column-major copy of a rows x cols RGB block: out[(x * rows + r) * 3 + ch] = in[r * stride + x * 3 + ch].
// Eight source rows at a time, so that every store of a column fills 24 contiguous bytes.
void transpose_rgb(const uint8_t* in, int stride, int rows, int cols, uint8_t* out) {
    const size_t step = static_cast<size_t>(rows) * 3;
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        const uint8_t* src[8];
        for (int i = 0; i < 8; ++i) src[i] = in + static_cast<size_t>(r + i) * stride;
        uint8_t* dst = out + static_cast<size_t>(r) * 3;
        for (int x = 0; x < cols; ++x, dst += step) {
            uint8_t block[24];
            for (int i = 0; i < 8; ++i) {
                block[3 * i] = src[i][3 * x];
                block[3 * i + 1] = src[i][3 * x + 1];
                block[3 * i + 2] = src[i][3 * x + 2];
            }
            std::memcpy(dst, block, sizeof(block));
        }
    }
    for (; r < rows; ++r) {
        const uint8_t* src = in + static_cast<size_t>(r) * stride;
        uint8_t* dst = out + static_cast<size_t>(r) * 3;
        for (int x = 0; x < cols; ++x, src += 3, dst += step) std::memcpy(dst, src, 3);
    }
}

// Horizontal pass over `rows` rows of src into tmp (count x rows, packed). Computed as a vertical pass over the
// transposed band (whole columns per tap, vectorised), then transposed back: same integer sums as Pillow's.
void horizontal_pass(const uint8_t* src, int stride, int rows, const std::vector<int>& bounds,
                     const std::vector<int32_t>& k, int ksize, int count, uint8_t* tmp) {
    thread_local std::vector<uint8_t> band, cols_out;
    thread_local std::vector<int32_t> acc;
    const int x_lo = bounds[0], x_hi = bounds[2 * (count - 1)] + bounds[2 * (count - 1) + 1];
    const int col = rows * 3;
    band.resize(static_cast<size_t>(x_hi - x_lo) * col);
    cols_out.resize(static_cast<size_t>(count) * col);
    acc.resize(static_cast<size_t>(col));
    transpose_rgb(src + static_cast<size_t>(x_lo) * 3, stride, rows, x_hi - x_lo, band.data());
    for (int xx = 0; xx < count; ++xx) {
        std::fill(acc.begin(), acc.end(), kHalf);
        const uint8_t* first = band.data() + static_cast<size_t>(bounds[2 * xx] - x_lo) * col;
        for (int t = 0; t < bounds[2 * xx + 1]; ++t)
            mac_row(acc.data(), first + static_cast<size_t>(t) * col, k[static_cast<size_t>(xx) * ksize + t], col);
        clip_row(acc.data(), cols_out.data() + static_cast<size_t>(xx) * col, col);
    }
    transpose_rgb(cols_out.data(), col, count, rows, tmp);
}

// Vertical pass: rows of `in` (width*3 bytes, `in_stride` apart) into dst rows, a whole row per tap.
void vertical_pass(const uint8_t* in, int in_stride, int width, const std::vector<int>& bounds,
                   const std::vector<int32_t>& k, int ksize, int count, uint8_t* dst, int dst_stride) {
    thread_local std::vector<int32_t> acc;
    const int n3 = width * 3;
    acc.resize(static_cast<size_t>(n3));
    for (int yy = 0; yy < count; ++yy) {
        std::fill(acc.begin(), acc.end(), kHalf);
        const int ymin = bounds[2 * yy], n = bounds[2 * yy + 1];
        for (int t = 0; t < n; ++t)
            mac_row(acc.data(), in + static_cast<size_t>(ymin + t) * in_stride, k[static_cast<size_t>(yy) * ksize + t],
                    n3);
        clip_row(acc.data(), dst + static_cast<size_t>(yy) * dst_stride, n3);
    }
}

// Pillow's ImagingResampleInner on the region starting at `src` (stride bytes per row): the horizontal pass
// over the rows the vertical taps need (8-bit intermediate), then the vertical pass, each skipped when it is
// the identity, into dst (ax_x.count x ax_y.count, dst_stride bytes per row).
void resample(const uint8_t* src, int stride, const Axis& ax_x, const Axis& ax_y, uint8_t* dst, int dst_stride) {
    thread_local std::vector<int> bx, by;
    thread_local std::vector<int32_t> kx, ky;
    thread_local std::vector<uint8_t> tmp;
    const bool need_h = !ax_x.identity(), need_v = !ax_y.identity();
    const int ksize_y = precompute_taps(ax_y, by, ky);
    const int y_first = by[0];
    const int y_last = by[2 * (ax_y.count - 1)] + by[2 * (ax_y.count - 1) + 1];
    const uint8_t* in = src;
    int in_stride = stride, x_offset = ax_x.first;  // identity horizontal pass: read the window directly
    if (need_h) {
        const int ksize_x = precompute_taps(ax_x, bx, kx);
        for (int i = 0; i < ax_y.count; ++i) by[2 * i] -= y_first;
        tmp.resize(static_cast<size_t>(ax_x.count) * 3 * (y_last - y_first));
        horizontal_pass(src + static_cast<size_t>(y_first) * stride, stride, y_last - y_first, bx, kx, ksize_x,
                        ax_x.count, tmp.data());
        in = tmp.data();
        in_stride = ax_x.count * 3;
        x_offset = 0;
    }
    in += static_cast<size_t>(x_offset) * 3;
    if (need_v) {
        vertical_pass(in, in_stride, ax_x.count, by, ky, ksize_y, ax_y.count, dst, dst_stride);
        return;
    }
    const int row0 = ax_y.first - (need_h ? y_first : 0);  // identity vertical pass: copy the window's rows
    for (int r = 0; r < ax_y.count; ++r)
        std::memcpy(dst + static_cast<size_t>(r) * dst_stride, in + static_cast<size_t>(row0 + r) * in_stride,
                    static_cast<size_t>(ax_x.count) * 3);
}

}  // namespace

void resize_bicubic_aa(const uint8_t* src, int sw, int sh, int stride, CropBox box, uint8_t* dst, int dw, int dh) {
    SSL_CHECK(box.w > 0 && box.h > 0 && box.x >= 0 && box.y >= 0 && box.x + box.w <= sw && box.y + box.h <= sh,
              "resize_bicubic_aa: box (x ", box.x, ", y ", box.y, ", w ", box.w, ", h ", box.h, ") outside the ", sw,
              "x", sh, " image");
    SSL_CHECK(dw > 0 && dh > 0, "resize_bicubic_aa: empty output ", dw, "x", dh);
    const uint8_t* origin = src + static_cast<size_t>(box.y) * stride + static_cast<size_t>(box.x) * 3;
    resample(origin, stride, Axis{box.w, 0.0, static_cast<double>(box.w), dw, 0, dw},
             Axis{box.h, 0.0, static_cast<double>(box.h), dh, 0, dh}, dst, dw * 3);
}

void resize_bicubic_aa(const uint8_t* src, int sw, int sh, int stride, BoxF box, uint8_t* dst, int dw, int dh) {
    SSL_CHECK(
        box.x0 >= 0 && box.y0 >= 0 && box.x1 > box.x0 && box.y1 > box.y0 && box.x1 <= sw + 1e-6 && box.y1 <= sh + 1e-6,
        "resize_bicubic_aa: box [", box.x0, ", ", box.x1, ") x [", box.y0, ", ", box.y1, ") outside the ", sw, "x", sh,
        " image");
    SSL_CHECK(dw > 0 && dh > 0, "resize_bicubic_aa: empty output ", dw, "x", dh);
    const int rx = static_cast<int>(std::floor(box.x0)), ry = static_cast<int>(std::floor(box.y0));
    const int rw = std::min(sw, static_cast<int>(std::ceil(box.x1 - 1e-9))) - rx;
    const int rh = std::min(sh, static_cast<int>(std::ceil(box.y1 - 1e-9))) - ry;
    const uint8_t* origin = src + static_cast<size_t>(ry) * stride + static_cast<size_t>(rx) * 3;
    resample(origin, stride, Axis{rw, box.x0 - rx, std::min(box.x1 - rx, static_cast<double>(rw)), dw, 0, dw},
             Axis{rh, box.y0 - ry, std::min(box.y1 - ry, static_cast<double>(rh)), dh, 0, dh}, dst, dw * 3);
}

void resized_short_side_size(int sw, int sh, int resize_short, int* out_w, int* out_h) {
    const int shorter = std::min(sw, sh), longer = std::max(sw, sh);
    const int new_long = static_cast<int>(static_cast<double>(static_cast<int64_t>(resize_short) * longer) / shorter);
    *out_w = sw <= sh ? resize_short : new_long;
    *out_h = sw <= sh ? new_long : resize_short;
}

void resize_center_crop(const uint8_t* src, int sw, int sh, int stride, int resize_short, int crop, uint8_t* dst) {
    SSL_CHECK(sw > 0 && sh > 0 && crop > 0 && crop <= resize_short,
              "resize_center_crop: needs a non-empty image and 0 < crop <= resize_short, got ", sw, "x", sh, " resize ",
              resize_short, " crop ", crop);
    int nw = 0, nh = 0;
    resized_short_side_size(sw, sh, resize_short, &nw, &nh);
    const int left = round_half_even((nw - crop) / 2.0), top = round_half_even((nh - crop) / 2.0);
    resample(src, stride, Axis{sw, 0.0, static_cast<double>(sw), nw, left, crop},
             Axis{sh, 0.0, static_cast<double>(sh), nh, top, crop}, dst, crop * 3);
}

void hflip(uint8_t* img, int w, int h, int stride) {
    for (int y = 0; y < h; ++y) {
        uint8_t* row = img + static_cast<size_t>(y) * stride;
        for (int a = 0, b = w - 1; a < b; ++a, --b) {
            std::swap(row[3 * a], row[3 * b]);
            std::swap(row[3 * a + 1], row[3 * b + 1]);
            std::swap(row[3 * a + 2], row[3 * b + 2]);
        }
    }
}

}  // namespace sslight::data
