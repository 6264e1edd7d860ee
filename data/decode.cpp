// Decoder: header checks before any allocation, TurboJPEG full decodes at a DCT scale, stb_image for PNG/BMP/GIF
// and as the fallback, Pillow's CMYK -> RGB, and the mapping of crop boxes into the decoded (scaled, possibly
// region-only, reoriented) pixels. Region decodes: decode_region.cpp; EXIF orientation: orientation.cpp.
// No gradients.
#include "data/decode.h"

#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "data/decode_detail.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace sslight::data {

const char* to_string(DecodeFailure f) {
    switch (f) {
        case DecodeFailure::zero_bytes:
            return "zero bytes";
        case DecodeFailure::truncated:
            return "truncated";
        case DecodeFailure::corrupt:
            return "corrupt";
        case DecodeFailure::too_large:
            return "too large";
        case DecodeFailure::unsupported:
            return "unsupported format";
    }
    return "?";
}

const char* to_string(ImageFormat f) {
    switch (f) {
        case ImageFormat::jpeg:
            return "JPEG";
        case ImageFormat::png:
            return "PNG";
        case ImageFormat::bmp:
            return "BMP";
        case ImageFormat::gif:
            return "GIF";
        case ImageFormat::unknown:
            return "unknown";
    }
    return "?";
}

DecodeError::DecodeError(DecodeFailure reason, const std::string& detail)
    : IoError(str("cannot decode image (", to_string(reason), "): ", detail)), reason_(reason) {}

namespace detail {

DecodeFailure classify_message(const std::string& msg) {
    auto has = [&](const char* s) { return msg.find(s) != std::string::npos; };
    // libjpeg meets the end of the data before the scan as a missing SOS (its source manager fakes an EOI).
    if (has("Premature end") || has("premature end") || has("missing SOS") || has("contains no image") ||
        has("outofdata") || has("not enough pixels")) {
        return DecodeFailure::truncated;
    }
    if (has("Empty JPEG image")) return DecodeFailure::corrupt;  // a 0x0 frame header
    if (has("precision") || has("Unsupported color conversion") || has("not supported") || has("unknown image type")) {
        return DecodeFailure::unsupported;
    }
    return DecodeFailure::corrupt;
}

// Pillow's cmyk2rgb on "CMYK;I" input (Pillow assumes Adobe-inverted CMYK for every CMYK JPEG).
void cmyk_inverted_to_rgb(const uint8_t* cmyk, size_t pixels, uint8_t* rgb) {
    auto muldiv255 = [](int a, int b) {
        const int t = a * b + 128;
        return ((t >> 8) + t) >> 8;
    };
    for (size_t i = 0; i < pixels; ++i) {
        const int nk = cmyk[4 * i + 3];  // 255 - k with k = 255 - stored
        for (int c = 0; c < 3; ++c) rgb[3 * i + c] = static_cast<uint8_t>(nk - muldiv255(255 - cmyk[4 * i + c], nk));
    }
}

}  // namespace detail

// ---- scale choice, files ---------------------------------------------------------------------------------
ScaleFactor pick_scale(int box_w, int box_h, int out_w, int out_h, bool fractional) {
    int count = 0;
    const tjscalingfactor* f = tjGetScalingFactors(&count);
    ScaleFactor best{1, 1};
    for (int i = 0; f && i < count; ++i) {
        const int64_t num = f[i].num, den = f[i].denom;
        if (num > den) continue;  // upscaling factors
        if (!fractional && num != den && !(num == 1 && (den == 2 || den == 4 || den == 8))) continue;
        if (int64_t(box_w) * num < int64_t(out_w) * den || int64_t(box_h) * num < int64_t(out_h) * den) continue;
        if (num * best.den < int64_t(best.num) * den) best = {static_cast<int>(num), static_cast<int>(den)};
    }
    return best;
}

std::vector<uint8_t> read_file_bytes(const std::string& path, const DecodeLimits& limits) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw IoError(str("cannot open image file '", path, "'"));
    const std::streamoff size = f.tellg();
    if (size < 0) throw IoError(str("cannot read image file '", path, "'"));
    if (size > limits.max_file_bytes) {
        throw DecodeError(DecodeFailure::too_large,
                          str("'", path, "' has ", size, " bytes, more than the cap of ", limits.max_file_bytes));
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(size));
    f.seekg(0);
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size)) {
        throw IoError(str("cannot read image file '", path, "'"));
    }
    return bytes;
}

// ---- Decoder ----------------------------------------------------------------------------------------------
struct Decoder::Header {
    ImageFormat format = ImageFormat::unknown;
    bool use_stb = false;  // decoded by stb_image (PNG, BMP, GIF)
    int raw_w = 0, raw_h = 0, orientation = 1, components = 3;
    int upright_w() const { return orientation >= 5 ? raw_h : raw_w; }
    int upright_h() const { return orientation >= 5 ? raw_w : raw_h; }
};

namespace {

ImageFormat sniff(const uint8_t* d, size_t n) {
    if (n >= 2 && d[0] == 0xFF && d[1] == 0xD8) return ImageFormat::jpeg;
    if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::png;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return ImageFormat::bmp;
    if (n >= 4 && std::memcmp(d, "GIF8", 4) == 0) return ImageFormat::gif;
    return ImageFormat::unknown;
}

void check_size(int w, int h, const DecodeLimits& lim, const char* what) {
    if (w <= 0 || h <= 0)
        throw DecodeError(DecodeFailure::corrupt, str(what, " header reports ", w, "x", h, " pixels"));
    if (int64_t(w) * h > lim.max_pixels) {
        throw DecodeError(DecodeFailure::too_large, str(what, " header reports ", w, "x", h, " = ", int64_t(w) * h,
                                                        " pixels, more than the cap of ", lim.max_pixels));
    }
}

// stb_image sizes its IDAT buffer by the chunk lengths a PNG declares before checking that they fit in the file (a
// 101-byte file made it ask for 2 GiB; found by fuzz/fuzz_decode): every chunk up to IEND must lie inside the file.
bool png_chunks_fit(const uint8_t* d, size_t n) {
    for (size_t p = 8; p + 8 <= n;) {
        const uint64_t len = (uint64_t(d[p]) << 24) | (uint64_t(d[p + 1]) << 16) | (uint64_t(d[p + 2]) << 8) | d[p + 3];
        if (len > n - p - 8) return false;
        if (std::memcmp(d + p + 4, "IEND", 4) == 0) return true;
        p += 12 + size_t(len);
    }
    return true;
}

ScaleFactor max_scale(ScaleFactor a, ScaleFactor b) { return int64_t(a.num) * b.den >= int64_t(b.num) * a.den ? a : b; }

int scaled(int dim, ScaleFactor s) { return static_cast<int>((int64_t(dim) * s.num + s.den - 1) / s.den); }

}  // namespace

Decoder::Decoder(DecodeOptions opts) : opts_(opts) { reset_handle(); }

Decoder::~Decoder() {
    if (tj_) tjDestroy(static_cast<tjhandle>(tj_));
}

// TurboJPEG 2.1.5 can leave a handle unusable after an error: start from a fresh one.
void Decoder::reset_handle() {
    if (tj_) tjDestroy(static_cast<tjhandle>(tj_));
    tj_ = tjInitDecompress();
    if (!tj_) throw LibraryError(str("tjInitDecompress failed: ", tjGetErrorStr2(nullptr)));
}

Decoder::Header Decoder::read_header(const uint8_t* data, size_t n) {
    if (n == 0) throw DecodeError(DecodeFailure::zero_bytes, "the file is empty");
    if (int64_t(n) > opts_.limits.max_file_bytes) {
        throw DecodeError(DecodeFailure::too_large,
                          str(n, " bytes, more than the cap of ", opts_.limits.max_file_bytes));
    }
    Header hd;
    hd.format = sniff(data, n);
    if (hd.format == ImageFormat::unknown) {
        throw DecodeError(DecodeFailure::unsupported,
                          str("not a JPEG, PNG, BMP or GIF file (", n, " bytes starting with 0x", std::hex,
                              int(data[0]), n > 1 ? int(data[1]) : 0, ")"));
    }
    if (hd.format == ImageFormat::png && !png_chunks_fit(data, n))
        throw DecodeError(DecodeFailure::corrupt, str("PNG: a chunk is longer than the ", n, "-byte file"));
    if (hd.format == ImageFormat::jpeg) {
        int subsamp = 0, cs = 0;
        tjhandle tj = static_cast<tjhandle>(tj_);
        const int rc =
            tjDecompressHeader3(tj, data, static_cast<unsigned long>(n), &hd.raw_w, &hd.raw_h, &subsamp, &cs);
        // A warning (e.g. "extraneous bytes before marker") leaves a usable header, except running out of data.
        const bool warning = rc != 0 && tjGetErrorCode(tj) == TJERR_WARNING;
        if (warning) {
            const std::string msg = tjGetErrorStr2(tj);
            reset_handle();
            if (detail::classify_message(msg) == DecodeFailure::truncated) {
                throw DecodeError(DecodeFailure::truncated, str("JPEG header: ", msg));
            }
        }
        if (rc == 0 || warning) {
            check_size(hd.raw_w, hd.raw_h, opts_.limits, "JPEG");
            hd.components = cs == TJCS_GRAY ? 1 : (cs == TJCS_CMYK || cs == TJCS_YCCK ? 4 : 3);
            if (opts_.apply_exif_orientation) hd.orientation = jpeg_exif_orientation(data, n);
            return hd;
        }
        // No fallback to stb_image for JPEGs: its JPEG decoder (2.27) writes and reads out of bounds on corrupt
        // Huffman tables (found by fuzz/fuzz_decode), so it is not compiled in at all.
        const std::string msg = tjGetErrorStr2(static_cast<tjhandle>(tj_));
        reset_handle();
        throw DecodeError(detail::classify_message(msg), str("JPEG header: ", msg));
    }
    hd.use_stb = true;
    int comp = 0;
    if (n > size_t(INT32_MAX) || !stbi_info_from_memory(data, static_cast<int>(n), &hd.raw_w, &hd.raw_h, &comp)) {
        const std::string msg = stbi_failure_reason();
        throw DecodeError(detail::classify_message(msg), str(to_string(hd.format), " header: ", msg));
    }
    check_size(hd.raw_w, hd.raw_h, opts_.limits, to_string(hd.format));
    hd.components = comp >= 3 ? 3 : 1;
    if (hd.format == ImageFormat::jpeg && opts_.apply_exif_orientation) hd.orientation = jpeg_exif_orientation(data, n);
    return hd;
}

ImageInfo Decoder::probe(const uint8_t* data, size_t n) {
    const Header hd = read_header(data, n);
    ImageInfo info;
    info.width = hd.upright_w();
    info.height = hd.upright_h();
    info.raw_width = hd.raw_w;
    info.raw_height = hd.raw_h;
    info.orientation = hd.format == ImageFormat::jpeg ? jpeg_exif_orientation(data, n) : 1;
    info.components = hd.components;
    info.format = hd.format;
    return info;
}

void Decoder::decode_jpeg_full(const uint8_t* data, size_t n, const Header& hd, ScaleFactor s, Image& out) {
    const int w = scaled(hd.raw_w, s), h = scaled(hd.raw_h, s);
    const bool cmyk = hd.components == 4;
    thread_local std::vector<uint8_t> cmyk_buf;
    uint8_t* dst = nullptr;
    if (cmyk) {
        cmyk_buf.resize(size_t(w) * h * 4);
        dst = cmyk_buf.data();
    } else {
        out.rgb.resize(size_t(w) * h * 3);
        dst = out.rgb.data();
    }
    const int rc = tjDecompress2(static_cast<tjhandle>(tj_), data, static_cast<unsigned long>(n), dst, w, 0, h,
                                 cmyk ? TJPF_CMYK : TJPF_RGB, 0);
    if (rc != 0) {
        const bool warning = tjGetErrorCode(static_cast<tjhandle>(tj_)) == TJERR_WARNING;
        const std::string msg = tjGetErrorStr2(static_cast<tjhandle>(tj_));
        reset_handle();
        // A warning ("extraneous bytes before marker" ...) leaves a usable image, except the end-of-data one:
        // libjpeg then pads the missing rows with grey, which must not reach training.
        if (!warning || detail::classify_message(msg) == DecodeFailure::truncated) {
            throw DecodeError(detail::classify_message(msg), str("JPEG: ", msg));
        }
    }
    if (cmyk) {
        out.rgb.resize(size_t(w) * h * 3);
        detail::cmyk_inverted_to_rgb(cmyk_buf.data(), size_t(w) * h, out.rgb.data());
    }
    out.width = w;
    out.height = h;
    out.scale_num = s.num;
    out.scale_den = s.den;
}

void Decoder::decode_stb(const uint8_t* data, size_t n, const Header& hd, Image& out) {
    int w = 0, h = 0, comp = 0;
    uint8_t* px = stbi_load_from_memory(data, static_cast<int>(n), &w, &h, &comp, 3);
    if (!px) {
        const std::string msg = stbi_failure_reason();
        throw DecodeError(detail::classify_message(msg), str(to_string(hd.format), ": ", msg));
    }
    out.width = w;
    out.height = h;
    out.scale_num = out.scale_den = 1;
    out.rgb.assign(px, px + size_t(w) * h * 3);
    stbi_image_free(px);
}

void Decoder::decode_scaled(const uint8_t* data, size_t n, const Header& hd, ScaleFactor s, Image& out) {
    if (hd.use_stb) {
        decode_stb(data, n, hd, out);
    } else {
        decode_jpeg_full(data, n, hd, s, out);
    }
}

Image Decoder::decode(const uint8_t* data, size_t n, int min_side_needed) {
    Image out;
    decode(data, n, min_side_needed, out);
    return out;
}

void Decoder::decode(const uint8_t* data, size_t n, int min_side_needed, Image& out) {
    const Header hd = read_header(data, n);
    const ScaleFactor s =
        min_side_needed > 0 && !hd.use_stb && opts_.dct_scaling
            ? pick_scale(hd.raw_w, hd.raw_h, min_side_needed, min_side_needed, opts_.fractional_scales)
            : ScaleFactor{1, 1};
    if (hd.orientation == 1) {
        decode_scaled(data, n, hd, s, out);
        return;
    }
    decode_scaled(data, n, hd, s, scratch_);
    apply_orientation(scratch_, hd.orientation, out);
}

CropSource Decoder::decode_for_crops(const uint8_t* data, size_t n, const std::vector<CropRequest>& crops) {
    CropSource out;
    decode_for_crops(data, n, crops, out);
    return out;
}

void Decoder::decode_for_crops(const uint8_t* data, size_t n, const std::vector<CropRequest>& crops, CropSource& out) {
    const Header hd = read_header(data, n);
    const int uw = hd.upright_w(), uh = hd.upright_h();
    ScaleFactor s{1, 8};
    for (const CropRequest& c : crops) {
        SSL_CHECK(c.box.x >= 0 && c.box.y >= 0 && c.box.w > 0 && c.box.h > 0 && c.box.x + c.box.w <= uw &&
                      c.box.y + c.box.h <= uh && c.out_w > 0 && c.out_h > 0,
                  "Decoder::decode_for_crops: box (x ", c.box.x, ", y ", c.box.y, ", w ", c.box.w, ", h ", c.box.h,
                  ") -> ", c.out_w, "x", c.out_h, " does not fit the ", uw, "x", uh, " image");
        s = max_scale(s, pick_scale(c.box.w, c.box.h, c.out_w, c.out_h, opts_.fractional_scales));
    }
    if (hd.use_stb || crops.empty() || !opts_.dct_scaling) s = {1, 1};
    const double f = double(s.num) / s.den;
    const bool swap = hd.orientation >= 5;
    const int sw = scaled(swap ? hd.raw_h : hd.raw_w, s), sh = scaled(swap ? hd.raw_w : hd.raw_h, s);
    out.boxes.clear();
    double x0 = sw, y0 = sh, x1 = 0, y1 = 0;
    for (const CropRequest& c : crops) {
        BoxF b{c.box.x * f, c.box.y * f, std::min<double>((c.box.x + c.box.w) * f, sw),
               std::min<double>((c.box.y + c.box.h) * f, sh)};
        out.boxes.push_back(b);
        x0 = std::min(x0, b.x0), y0 = std::min(y0, b.y0), x1 = std::max(x1, b.x1), y1 = std::max(y1, b.y1);
    }
    // The region gets a margin so that libjpeg's edge handling at its borders (fancy upsampling) stays outside
    // every box: inside, the pixels equal a full decode's.
    const int margin = 16;
    const int rx = std::max(0, static_cast<int>(std::floor(x0)) - margin);
    const int ry = std::max(0, static_cast<int>(std::floor(y0)) - margin);
    const CropBox region{rx, ry, std::min(sw, static_cast<int>(std::ceil(x1)) + margin) - rx,
                         std::min(sh, static_cast<int>(std::ceil(y1)) + margin) - ry};
    // A region decode stops before the end of the data, so it would not notice a truncated file: it is only
    // used on files that end with the EOI marker (others take the full decode, which checks).
    const bool ends_with_eoi = n >= 4 && data[n - 2] == 0xFF && data[n - 1] == 0xD9;
    out.region = !hd.use_stb && ends_with_eoi && !crops.empty() && opts_.region_max_fraction > 0 &&
                 double(region.w) * region.h < opts_.region_max_fraction * double(sw) * sh;
    if (!out.region) {
        if (hd.orientation == 1) {
            decode_scaled(data, n, hd, s, out.image);
        } else {
            decode_scaled(data, n, hd, s, scratch_);
            apply_orientation(scratch_, hd.orientation, out.image);
        }
        return;
    }
    const CropBox raw = detail::upright_rect_to_raw(hd.orientation, scaled(hd.raw_w, s), scaled(hd.raw_h, s), region);
    Image& target = hd.orientation == 1 ? out.image : scratch_;
    detail::decode_jpeg_region(data, n, s, raw, target);
    if (hd.orientation != 1) apply_orientation(scratch_, hd.orientation, out.image);
    for (BoxF& b : out.boxes) {
        b.x0 -= rx, b.x1 -= rx, b.y0 -= ry, b.y1 -= ry;
    }
}

}  // namespace sslight::data
