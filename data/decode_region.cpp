// Region decoding through the libjpeg API (libjpeg-turbo): the image scaled by a DCT factor, then only the
// iMCU columns of the rectangle (jpeg_crop_scanline), only its rows (jpeg_skip_scanlines above, abort below).
// Entropy decoding of skipped rows still happens (JPEG has no random access); the IDCT, upsampling and colour
// conversion of everything outside the rectangle are saved. libjpeg reports errors by longjmp: this file keeps
// no object with a destructor alive across the calls that may jump.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include <jerror.h>
#include <jpeglib.h>

#include "data/decode_detail.h"

namespace sslight::data::detail {

namespace {

struct ErrorManager {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    bool truncated;
};

void on_error(j_common_ptr cinfo) {
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

// Warnings are not failures, except the end of the data arriving before the end of the image.
void on_message(j_common_ptr cinfo, int level) {
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->truncated = true;
}

// The part that runs under setjmp: plain C state only. Returns false with err->message set on failure.
bool run_region_decode(jpeg_decompress_struct* cinfo, ErrorManager* err, const uint8_t* data, size_t n, ScaleFactor s,
                       CropBox rect, std::vector<uint8_t>* row, Image* out) {
    if (setjmp(err->jump)) return false;
    jpeg_mem_src(cinfo, data, static_cast<unsigned long>(n));
    jpeg_read_header(cinfo, TRUE);
    const bool cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo->scale_num = static_cast<unsigned>(s.num);
    cinfo->scale_denom = static_cast<unsigned>(s.den);
    jpeg_start_decompress(cinfo);
    if (rect.x < 0 || rect.y < 0 || rect.x + rect.w > int(cinfo->output_width) ||
        rect.y + rect.h > int(cinfo->output_height)) {
        std::snprintf(err->message, sizeof(err->message), "region %dx%d+%d+%d outside the %ux%u scaled image", rect.w,
                      rect.h, rect.x, rect.y, cinfo->output_width, cinfo->output_height);
        return false;
    }
    JDIMENSION xoff = static_cast<JDIMENSION>(rect.x), width = static_cast<JDIMENSION>(rect.w);
    jpeg_crop_scanline(cinfo, &xoff, &width);  // widens to iMCU boundaries
    const int comps = cinfo->output_components;
    row->resize(size_t(cinfo->output_width) * comps);
    if (rect.y > 0) jpeg_skip_scanlines(cinfo, static_cast<JDIMENSION>(rect.y));
    const size_t skip = size_t(rect.x - int(xoff)) * comps;
    for (int r = 0; r < rect.h; ++r) {
        JSAMPROW p = row->data();
        if (jpeg_read_scanlines(cinfo, &p, 1) != 1) {
            std::snprintf(err->message, sizeof(err->message), "no scanline %d", rect.y + r);
            return false;
        }
        uint8_t* dst = out->rgb.data() + size_t(r) * rect.w * 3;
        if (cmyk) {
            cmyk_inverted_to_rgb(row->data() + skip, size_t(rect.w), dst);
        } else {
            std::memcpy(dst, row->data() + skip, size_t(rect.w) * 3);
        }
    }
    return true;
}

}  // namespace

void decode_jpeg_region(const uint8_t* data, size_t n, ScaleFactor s, CropBox rect, Image& out) {
    thread_local std::vector<uint8_t> row;
    out.rgb.resize(size_t(rect.w) * rect.h * 3);
    jpeg_decompress_struct cinfo;
    ErrorManager err;
    std::memset(&err, 0, sizeof(err));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
    const bool ok = run_region_decode(&cinfo, &err, data, n, s, rect, &row, &out);
    jpeg_destroy_decompress(&cinfo);
    if (!ok) throw DecodeError(classify_message(err.message), str("JPEG region decode: ", err.message));
    if (err.truncated) throw DecodeError(DecodeFailure::truncated, "JPEG: Premature end of JPEG file");
    out.width = rect.w;
    out.height = rect.h;
    out.scale_num = s.num;
    out.scale_den = s.den;
}

}  // namespace sslight::data::detail
