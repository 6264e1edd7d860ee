// Internals shared by decode.cpp and decode_region.cpp (not part of the data API): error classification of
// library messages, Pillow's CMYK conversion, orientation geometry and the libjpeg region decoder.
#pragma once
#include <string>

#include "data/decode.h"

namespace sslight::data::detail {

// The reason a libjpeg/TurboJPEG/stb message stands for.
DecodeFailure classify_message(const std::string& msg);

// Pillow's cmyk2rgb on Adobe-inverted CMYK ("CMYK;I"): pixels x 4 bytes in, pixels x 3 out.
void cmyk_inverted_to_rgb(const uint8_t* cmyk, size_t pixels, uint8_t* rgb);

// The stored-image rectangle (raw_w x raw_h) whose orientation-o transpose is the upright rectangle r.
CropBox upright_rect_to_raw(int orientation, int raw_w, int raw_h, CropBox r);

// Decodes the rectangle `rect` (in the coordinates of the image scaled by s) of a JPEG through the libjpeg API:
// jpeg_crop_scanline for the columns, jpeg_skip_scanlines for the rows above, stops after the last row.
// out gets rect.w x rect.h RGB pixels. Throws DecodeError.
void decode_jpeg_region(const uint8_t* data, size_t n, ScaleFactor s, CropBox rect, Image& out);

}  // namespace sslight::data::detail
