// EXIF orientation: a bounds-checked reader of the Orientation tag (0x0112) in a JPEG's APP1 "Exif" segment
// (TIFF, both byte orders), the 8 transposes of Pillow's ImageOps.exif_transpose, and the mapping of an upright
// rectangle back to the stored image for region decoding. No gradients.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "data/decode_detail.h"

namespace sslight::data {

namespace detail {

// Upright pixel (x, y) of an orientation-o image is raw pixel (u, v) of the W x H stored image.
static void upright_to_raw(int o, int w, int h, int x, int y, int* u, int* v) {
    switch (o) {
        case 2:
            *u = w - 1 - x, *v = y;
            break;
        case 3:
            *u = w - 1 - x, *v = h - 1 - y;
            break;
        case 4:
            *u = x, *v = h - 1 - y;
            break;
        case 5:
            *u = y, *v = x;
            break;
        case 6:
            *u = y, *v = h - 1 - x;
            break;
        case 7:
            *u = w - 1 - y, *v = h - 1 - x;
            break;
        case 8:
            *u = w - 1 - y, *v = x;
            break;
        default:
            *u = x, *v = y;
            break;
    }
}

CropBox upright_rect_to_raw(int o, int raw_w, int raw_h, CropBox r) {
    int u0, v0, u1, v1;
    upright_to_raw(o, raw_w, raw_h, r.x, r.y, &u0, &v0);
    upright_to_raw(o, raw_w, raw_h, r.x + r.w - 1, r.y + r.h - 1, &u1, &v1);
    return {std::min(u0, u1), std::min(v0, v1), std::abs(u1 - u0) + 1, std::abs(v1 - v0) + 1};
}


}  // namespace detail

// ---- EXIF orientation ------------------------------------------------------------------------------------
namespace {

// Tag 0x0112 of IFD0 of a TIFF block (the APP1 payload after "Exif\0\0"); 0 when absent or malformed.
int tiff_orientation(const uint8_t* t, size_t n) {
    if (n < 8) return 0;
    const bool le = t[0] == 'I' && t[1] == 'I';
    if (!le && !(t[0] == 'M' && t[1] == 'M')) return 0;
    auto rd16 = [&](size_t p) { return le ? t[p] | (t[p + 1] << 8) : (t[p] << 8) | t[p + 1]; };
    auto rd32 = [&](size_t p) {
        return le ? uint32_t(t[p]) | uint32_t(t[p + 1]) << 8 | uint32_t(t[p + 2]) << 16 | uint32_t(t[p + 3]) << 24
                  : uint32_t(t[p]) << 24 | uint32_t(t[p + 1]) << 16 | uint32_t(t[p + 2]) << 8 | uint32_t(t[p + 3]);
    };
    if (rd16(2) != 42) return 0;
    const size_t ifd = rd32(4);
    if (ifd + 2 > n) return 0;
    const int count = rd16(ifd);
    for (int i = 0; i < count; ++i) {
        const size_t e = ifd + 2 + 12 * static_cast<size_t>(i);
        if (e + 12 > n) return 0;
        if (rd16(e) != 0x0112) continue;
        if (rd16(e + 2) != 3 || rd32(e + 4) < 1) return 0;  // SHORT, at least one value, stored inline
        const int v = rd16(e + 8);
        return v >= 1 && v <= 8 ? v : 0;
    }
    return 0;
}

}  // namespace

int jpeg_exif_orientation(const uint8_t* d, size_t n) {
    if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return 1;
    size_t p = 2;
    while (p + 4 <= n) {
        if (d[p] != 0xFF) return 1;
        const uint8_t m = d[p + 1];
        if (m == 0xFF) {  // fill byte
            ++p;
            continue;
        }
        if (m == 0xDA || m == 0xD9) return 1;         // start of scan / end of image: no EXIF before the pixels
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // markers without a length
            p += 2;
            continue;
        }
        const size_t len = (static_cast<size_t>(d[p + 2]) << 8) | d[p + 3];
        if (len < 2 || p + 2 + len > n) return 1;
        if (m == 0xE1 && len >= 8 && std::memcmp(d + p + 4, "Exif\0\0", 6) == 0) {
            const int o = tiff_orientation(d + p + 10, len - 8);
            if (o) return o;
        }
        p += 2 + len;
    }
    return 1;
}

void apply_orientation(const Image& in, int o, Image& out) {
    const bool swap = o >= 5 && o <= 8;
    const int w = in.width, h = in.height, ow = swap ? h : w, oh = swap ? w : h;
    const ptrdiff_t st = in.stride();
    // Source offset of upright pixel (x, y) = base + x * sx + y * sy (see detail::upright_to_raw).
    ptrdiff_t base = 0, sx = 3, sy = st;
    const ptrdiff_t last_col = ptrdiff_t(w - 1) * 3, last_row = ptrdiff_t(h - 1) * st;
    switch (o) {
        case 2:
            base = last_col, sx = -3, sy = st;
            break;
        case 3:
            base = last_row + last_col, sx = -3, sy = -st;
            break;
        case 4:
            base = last_row, sx = 3, sy = -st;
            break;
        case 5:
            base = 0, sx = st, sy = 3;
            break;
        case 6:
            base = last_row, sx = -st, sy = 3;
            break;
        case 7:
            base = last_row + last_col, sx = -st, sy = -3;
            break;
        case 8:
            base = last_col, sx = st, sy = -3;
            break;
        default:
            break;
    }
    out.width = ow;
    out.height = oh;
    out.scale_num = in.scale_num;
    out.scale_den = in.scale_den;
    out.rgb.resize(static_cast<size_t>(ow) * oh * 3);
    for (int y = 0; y < oh; ++y) {
        const uint8_t* s = in.rgb.data() + base + y * sy;
        uint8_t* d = out.rgb.data() + static_cast<size_t>(y) * ow * 3;
        for (int x = 0; x < ow; ++x, s += sx, d += 3) {
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    }
}

}  // namespace sslight::data
