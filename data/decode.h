// Image decoding for the loader: JPEG through TurboJPEG at the smallest DCT scale (1/8 .. 1) that still gives
// the largest crop its output resolution, libjpeg region decoding (jpeg_crop_scanline / jpeg_skip_scanlines)
// when the crops cover little of the picture, stb_image for PNG/BMP/GIF (a JPEG TurboJPEG rejects is an error);
// grayscale and CMYK/YCCK become RGB (Pillow's CMYK conversion, Adobe-inverted CMYK as Pillow reads it);
// EXIF orientation (APP1, tag 0x0112) applied by default. Every failure is a DecodeError with a reason, thrown
// before any allocation sized by an untrusted header. Nothing here is differentiable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/crop.h"
#include "engine/check.h"

namespace sslight::data {

enum class DecodeFailure { zero_bytes, truncated, corrupt, too_large, unsupported };
const char* to_string(DecodeFailure f);

// A file that cannot be decoded; the loader skips it and counts it. what() names the reason and the detail.
struct DecodeError : IoError {
    DecodeError(DecodeFailure reason, const std::string& detail);
    DecodeFailure reason() const { return reason_; }

private:
    DecodeFailure reason_;
};

struct DecodeLimits {
    int64_t max_pixels = 100'000'000;  // width * height of the stored image
    int64_t max_file_bytes = 256 << 20;
};

struct DecodeOptions {
    DecodeLimits limits;
    // Apply the EXIF orientation (what a viewer shows). torchvision's ImageFolder (PIL open + convert) does not:
    // turn it off to reproduce torchvision exactly.
    bool apply_exif_orientation = true;
    // Decode only the rows and iMCU columns the crops need when they cover less than this fraction of the
    // (scaled) image; 0 disables region decoding.
    double region_max_fraction = 0.5;
    // Decode JPEGs at the smallest DCT scale the crops allow (off: always full resolution, as PIL).
    bool dct_scaling = true;
    // Also use the n/8 scales other than 1/8, 1/4, 1/2 (see pick_scale).
    bool fractional_scales = false;
};

enum class ImageFormat { jpeg, png, bmp, gif, unknown };
const char* to_string(ImageFormat f);

struct ImageInfo {
    int width = 0, height = 0;          // as decode() returns it: upright when the orientation is applied
    int raw_width = 0, raw_height = 0;  // as stored in the file
    int orientation = 1;                // EXIF orientation 1..8 (1 when absent)
    int components = 3;                 // 1 gray, 3 colour, 4 CMYK/YCCK
    ImageFormat format = ImageFormat::unknown;
};

struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;          // HWC RGB, width * 3 bytes per row
    int scale_num = 1, scale_den = 1;  // the DCT scale the pixels were decoded at
    int stride() const { return width * 3; }
};

// One crop the decoded pixels must serve: a box in upright full-resolution coordinates (ImageInfo width x
// height) and the output size it is resampled to.
struct CropRequest {
    CropBox box;
    int out_w = 0, out_h = 0;
};

// Pixels covering a set of crops and, for each crop, its box in those pixels' coordinates (scaled by
// image.scale_num / scale_den and shifted by the decoded region's origin): feed image + boxes[i] to
// resize_bicubic_aa(BoxF).
struct CropSource {
    Image image;
    std::vector<BoxF> boxes;
    bool region = false;  // true when only a region was decoded
};

// The smallest scale s <= 1 TurboJPEG offers with box_w * s >= out_w and box_h * s >= out_h; 1 when even the
// full resolution is smaller (upscaling). By default only 1/8, 1/4, 1/2 and 1: libjpeg-turbo's other n/8
// scales run without SIMD and decode slower than the full image (measured: 7/8 of a 1282x1110 photo takes
// 2.1x the time of 1/1), so they are offered only with fractional = true.
struct ScaleFactor {
    int num = 1, den = 1;
};
ScaleFactor pick_scale(int box_w, int box_h, int out_w, int out_h, bool fractional = false);

// Reads a whole file; IoError naming the path when it cannot be read, DecodeError(too_large) past the cap.
std::vector<uint8_t> read_file_bytes(const std::string& path, const DecodeLimits& limits = {});

// Reorients an upright-to-be image: EXIF orientation 1..8 as Pillow's ImageOps.exif_transpose.
void apply_orientation(const Image& in, int orientation, Image& out);

// EXIF orientation from a JPEG's APP1 segment (bounds-checked, both byte orders); 1 when absent or malformed.
int jpeg_exif_orientation(const uint8_t* data, size_t n);

// One per worker thread (not thread-safe): owns a TurboJPEG handle, re-created after every error.
class Decoder {
public:
    explicit Decoder(DecodeOptions opts = {});
    ~Decoder();
    Decoder(const Decoder&) = delete;
    Decoder& operator=(const Decoder&) = delete;

    const DecodeOptions& options() const { return opts_; }

    ImageInfo probe(const uint8_t* data, size_t n);

    // The whole image at the smallest scale whose shorter side is still >= min_side_needed (0: full scale).
    Image decode(const uint8_t* data, size_t n, int min_side_needed = 0);
    void decode(const uint8_t* data, size_t n, int min_side_needed, Image& out);  // reuses out's buffer

    // Decodes at the scale the most demanding crop needs (pick_scale), only the region the crops cover when
    // that pays (DecodeOptions::region_max_fraction), and maps every box into the decoded pixels.
    CropSource decode_for_crops(const uint8_t* data, size_t n, const std::vector<CropRequest>& crops);
    void decode_for_crops(const uint8_t* data, size_t n, const std::vector<CropRequest>& crops, CropSource& out);
    CropSource decode_for_crop(const uint8_t* data, size_t n, CropBox box, int out_size) {
        return decode_for_crops(data, n, {CropRequest{box, out_size, out_size}});
    }

private:
    struct Header;
    Header read_header(const uint8_t* data, size_t n);
    void decode_jpeg_full(const uint8_t* data, size_t n, const Header& hd, ScaleFactor s, Image& out);
    void decode_stb(const uint8_t* data, size_t n, const Header& hd, Image& out);
    void decode_scaled(const uint8_t* data, size_t n, const Header& hd, ScaleFactor s, Image& out);
    void reset_handle();

    DecodeOptions opts_;
    void* tj_ = nullptr;  // tjhandle
    Image scratch_;       // pre-orientation pixels
};

}  // namespace sslight::data
