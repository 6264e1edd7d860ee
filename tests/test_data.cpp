// The data loader's decode + crop half and its indexes: decoding real photographs (Debian's opencv-doc) and
// generated variants (subsampling, progressive, restart markers, arithmetic, grayscale, CMYK, PNG, the 8 EXIF
// orientations) against libjpeg-turbo's djpeg and the source pixels; bad files (truncated, garbage, empty,
// absurd headers) as typed DecodeErrors without large allocations; DCT-scale choice and region decoding;
// RandomResizedCrop statistics and determinism; resampling identities; ImageFolder / list files and the sampler.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#include <atomic>
#include <cstring>
#include <new>
#include <set>

#include "data/crop.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "tests/data/test_images.h"

using namespace sslight;
using namespace sslight::data;
using sslight::test::psnr;
using sslight::test::test_images;

// Largest single operator-new request while tracking is on (the absurd-header test).
static std::atomic<bool> g_track{false};
static std::atomic<size_t> g_max_alloc{0};
void* operator new(size_t n) {
    if (g_track.load(std::memory_order_relaxed) && n > g_max_alloc.load(std::memory_order_relaxed)) g_max_alloc = n;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace {

std::vector<uint8_t> bytes_of(const std::string& path) { return read_file_bytes(path); }

// A smooth, non-constant w x h picture (odd sizes welcome).
std::vector<uint8_t> synthetic_rgb(int w, int h) {
    std::vector<uint8_t> px(size_t(w) * h * 3);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c)
                px[(size_t(y) * w + x) * 3 + c] =
                    uint8_t(127.5 + 100 * std::sin(0.05 * x * (c + 1) + 0.03 * y) * std::cos(0.02 * y * (3 - c)));
    return px;
}

std::vector<uint8_t> tj_compress(const std::vector<uint8_t>& rgb, int w, int h, int subsamp) {
    tjhandle tj = tjInitCompress();
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    REQUIRE(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, subsamp, 92, 0) == 0);
    std::vector<uint8_t> out(buf, buf + size);
    tjFree(buf);
    tjDestroy(tj);
    return out;
}

// The reference decode of a JPEG by libjpeg-turbo's djpeg (same library, same IDCT: expected bit-exact).
test::Rgb8 djpeg(const std::string& path) {
    const std::string out = test_images().dir + "/djpeg_" + std::to_string(::getpid()) + ".ppm";
    std::remove(out.c_str());
    std::system(("djpeg -ppm '" + path + "' > '" + out + "' 2>/dev/null").c_str());  // exits 2 after a warning
    test::Rgb8 img = test::read_pnm(out);
    std::remove(out.c_str());
    REQUIRE_MESSAGE(img.width > 0, "djpeg could not decode ", path);
    return img;
}

std::string g_last_error;  // what() of the last DecodeError failure_of() caught

DecodeFailure failure_of(Decoder& dec, const std::vector<uint8_t>& b) {
    try {
        dec.decode(b.data(), b.size());
    } catch (const DecodeError& e) {
        g_last_error = e.what();
        return e.reason();
    }
    FAIL("expected a DecodeError");
    return DecodeFailure::corrupt;
}

void require_variants() {
    if (!test_images().variants) MESSAGE("SKIP (generated variants): ", test_images().variant_status);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("decode: synthetic JPEGs from TurboJPEG at every subsampling, odd sizes") {
        Decoder dec;
        for (auto [w, h] : {std::pair{123, 77}, {1, 1}, {640, 427}}) {
            const std::vector<uint8_t> src = synthetic_rgb(w, h);
            for (int ss : {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_GRAY}) {
                const std::vector<uint8_t> jpg = tj_compress(src, w, h, ss);
                const ImageInfo info = dec.probe(jpg.data(), jpg.size());
                CHECK(info.width == w);
                CHECK(info.components == (ss == TJSAMP_GRAY ? 1 : 3));
                const Image img = dec.decode(jpg.data(), jpg.size());
                REQUIRE(img.width == w);
                REQUIRE(img.height == h);
                if (ss != TJSAMP_GRAY && w > 8) CHECK(psnr(img.rgb.data(), src.data(), src.size()) > 30);
            }
        }
    }

    TEST_CASE("decode: the opencv-doc photographs equal djpeg's decode, PNGs decode") {
        if (!test_images().photos) {
            MESSAGE("SKIP (real photographs): ", test_images().photo_status);
            return;
        }
        Decoder dec;
        for (const char* name :
             {"baboon.jpg", "fruits.jpg", "building.jpg", "board.jpg", "aero1.jpg", "leuvenA.jpg", "messi5.jpg",
              "home.jpg", "orange.jpg", "starry_night.jpg", "aloeL.jpg", "butterfly.jpg"}) {
            CAPTURE(name);
            const std::vector<uint8_t> b = bytes_of(test_images().photo(name));
            const Image img = dec.decode(b.data(), b.size());
            const test::Rgb8 ref = djpeg(test_images().photo(name));
            REQUIRE(img.width == ref.width);
            REQUIRE(img.height == ref.height);
            CHECK(test::max_abs_diff(img.rgb.data(), ref.px.data(), ref.px.size()) == 0);
        }
        for (const char* name : {"smarties.png", "rubberwhale1.png", "box.png"}) {
            CAPTURE(name);
            const std::vector<uint8_t> b = bytes_of(test_images().photo(name));
            const ImageInfo info = dec.probe(b.data(), b.size());
            CHECK(info.format == ImageFormat::png);
            const Image img = dec.decode(b.data(), b.size());
            CHECK(img.width == info.width);
            CHECK(*std::max_element(img.rgb.begin(), img.rgb.end()) >
                  *std::min_element(img.rgb.begin(), img.rgb.end()));
        }
    }

    TEST_CASE("decode: every valid variant gives the source picture") {
        require_variants();
        if (!test_images().variants) return;
        const test::Rgb8 base = test::read_pnm(test_images().variant("_base.ppm"));
        REQUIRE(base.width == 512);
        Decoder dec;
        struct Case {
            const char* name;
            double min_psnr;
        };
        for (Case c : {Case{"s420.jpg", 30},
                       {"s422.jpg", 30},
                       {"s444.jpg", 33},
                       {"progressive.jpg", 30},
                       {"restart.jpg", 30},
                       {"arith.jpg", 30},
                       {"extraneous.jpg", 30},
                       {"cmyk.jpg", 28},
                       {"png_rgb.png", INFINITY},
                       {"png_rgba.png", INFINITY}}) {
            CAPTURE(c.name);
            const std::vector<uint8_t> b = bytes_of(test_images().variant(c.name));
            const Image img = dec.decode(b.data(), b.size());
            REQUIRE(img.width == base.width);
            REQUIRE(img.height == base.height);
            CHECK(psnr(img.rgb.data(), base.px.data(), base.px.size()) >= c.min_psnr);
            if (std::string(c.name).find(".jpg") != std::string::npos && std::string(c.name) != "cmyk.jpg") {
                const test::Rgb8 ref = djpeg(test_images().variant(c.name));
                REQUIRE(ref.px.size() == img.rgb.size());
                CHECK(test::max_abs_diff(img.rgb.data(), ref.px.data(), ref.px.size()) == 0);
            }
        }
        std::vector<uint8_t> luma(base.px.size());
        for (size_t i = 0; i < luma.size(); i += 3)
            luma[i] = luma[i + 1] = luma[i + 2] =
                uint8_t(std::lround(0.299 * base.px[i] + 0.587 * base.px[i + 1] + 0.114 * base.px[i + 2]));
        for (const char* name : {"gray.jpg", "png_gray.png"}) {
            CAPTURE(name);
            const std::vector<uint8_t> b = bytes_of(test_images().variant(name));
            const Image img = dec.decode(b.data(), b.size());
            REQUIRE(img.rgb.size() == luma.size());
            CHECK(psnr(img.rgb.data(), luma.data(), luma.size()) > 30);
            size_t coloured = 0;  // pixels whose channels differ
            for (size_t i = 0; i < img.rgb.size(); i += 3)
                coloured += img.rgb[i] != img.rgb[i + 1] || img.rgb[i] != img.rgb[i + 2];
            CHECK(coloured == 0);
        }
    }

    TEST_CASE("decode: the 8 EXIF orientations give the same upright picture; off keeps the stored one") {
        require_variants();
        if (!test_images().variants) return;
        Decoder dec, raw_dec(DecodeOptions{DecodeLimits{}, false, 0.5, true});
        const std::vector<uint8_t> ref_bytes = bytes_of(test_images().variant("s444.jpg"));
        const Image ref = dec.decode(ref_bytes.data(), ref_bytes.size());
        for (int o = 1; o <= 8; ++o) {
            CAPTURE(o);
            const std::vector<uint8_t> b = bytes_of(test_images().variant("orient" + std::to_string(o) + ".jpg"));
            CHECK(jpeg_exif_orientation(b.data(), b.size()) == o);
            CHECK(dec.probe(b.data(), b.size()).orientation == o);
            const Image img = dec.decode(b.data(), b.size());
            REQUIRE(img.width == ref.width);
            REQUIRE(img.height == ref.height);
            CHECK(psnr(img.rgb.data(), ref.rgb.data(), ref.rgb.size()) > 45);  // lossless transforms, IDCT rounding
            const Image stored = raw_dec.decode(b.data(), b.size());
            CHECK(stored.width == (o >= 5 ? ref.height : ref.width));
            // Region decoding of an oriented file maps the box through the orientation.
            const CropBox box{100, 60, 150, 130};
            Decoder region_dec(DecodeOptions{DecodeLimits{}, true, 0.5, true}),
                full_dec(DecodeOptions{DecodeLimits{}, true, 0, true});
            const CropSource rs = region_dec.decode_for_crop(b.data(), b.size(), box, 96);
            const CropSource fs = full_dec.decode_for_crop(b.data(), b.size(), box, 96);
            CHECK(rs.region);
            CHECK_FALSE(fs.region);
            std::vector<uint8_t> a(96 * 96 * 3), c(96 * 96 * 3);
            resize_bicubic_aa(rs.image.rgb.data(), rs.image.width, rs.image.height, rs.image.stride(), rs.boxes[0],
                              a.data(), 96, 96);
            resize_bicubic_aa(fs.image.rgb.data(), fs.image.width, fs.image.height, fs.image.stride(), fs.boxes[0],
                              c.data(), 96, 96);
            CHECK(test::max_abs_diff(a.data(), c.data(), a.size()) == 0);
        }
    }

    TEST_CASE("decode: apply_orientation and the EXIF parser on hand-made inputs") {
        Image in;  // 3 x 2: pixel value = 10 * row + column in every channel
        in.width = 3;
        in.height = 2;
        for (int y = 0; y < 2; ++y)
            for (int x = 0; x < 3; ++x)
                for (int c = 0; c < 3; ++c) in.rgb.push_back(uint8_t(10 * y + x));
        // Upright first row for each orientation (Pillow's exif_transpose).
        const std::vector<std::vector<int>> first_row = {{},      {0, 1, 2}, {2, 1, 0}, {12, 11, 10}, {10, 11, 12},
                                                         {0, 10}, {10, 0},   {12, 2},   {2, 12}};
        for (int o = 1; o <= 8; ++o) {
            Image out;
            apply_orientation(in, o, out);
            CHECK(out.width == (o >= 5 ? 2 : 3));
            for (size_t x = 0; x < first_row[o].size(); ++x) CHECK(out.rgb[3 * x] == first_row[o][x]);
        }
        for (bool le : {true, false}) {  // SOI, APP1 Exif with a one-entry IFD0: Orientation = 6
            std::vector<uint8_t> tiff = le ? std::vector<uint8_t>{'I', 'I'} : std::vector<uint8_t>{'M', 'M'};
            auto put = [&](uint32_t v, int bytes) {
                for (int i = 0; i < bytes; ++i) tiff.push_back(uint8_t(v >> (8 * (le ? i : bytes - 1 - i))));
            };
            put(42, 2), put(8, 4), put(1, 2);                            // magic, IFD0 offset, one entry
            put(0x0112, 2), put(3, 2), put(1, 4), put(6, 2), put(0, 2);  // Orientation, SHORT, count 1, value 6
            put(0, 4);                                                   // no next IFD
            std::vector<uint8_t> jpg = {0xFF, 0xD8, 0xFF, 0xE1, 0, uint8_t(tiff.size() + 8), 'E', 'x', 'i', 'f', 0, 0};
            jpg.insert(jpg.end(), tiff.begin(), tiff.end());
            jpg.insert(jpg.end(), {0xFF, 0xDA, 0, 2});
            CHECK(jpeg_exif_orientation(jpg.data(), jpg.size()) == 6);
            jpg[12 + 4 + (le ? 0 : 3)] = 200;  // IFD offset past the segment
            CHECK(jpeg_exif_orientation(jpg.data(), jpg.size()) == 1);
            CHECK(jpeg_exif_orientation(jpg.data(), 9) == 1);  // cut inside the segment
        }
    }

    TEST_CASE("decode: bad files are DecodeErrors with a reason; the decoder stays usable") {
        Decoder dec;
        INFO("last DecodeError: ", g_last_error);
        const std::vector<uint8_t> good = tj_compress(synthetic_rgb(64, 48), 64, 48, TJSAMP_420);
        auto still_works = [&] { CHECK(dec.decode(good.data(), good.size()).width == 64); };
        CHECK(failure_of(dec, {}) == DecodeFailure::zero_bytes);
        CHECK(failure_of(dec, std::vector<uint8_t>(100, 'x')) == DecodeFailure::unsupported);
        still_works();
        CHECK(failure_of(dec, std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2)) ==
              DecodeFailure::truncated);
        still_works();
        std::vector<uint8_t> huge = good;
        size_t sof = 0;  // the SOF0 marker: precision, height, width follow its length
        while (sof + 1 < huge.size() && !(huge[sof] == 0xFF && huge[sof + 1] == 0xC0)) ++sof;
        REQUIRE(sof + 9 < huge.size());
        huge[sof + 5] = huge[sof + 6] = huge[sof + 7] = huge[sof + 8] = 0xFA;  // 64250 x 64250
        g_max_alloc = 0;
        g_track = true;
        CHECK(failure_of(dec, huge) == DecodeFailure::too_large);
        CHECK_THROWS_AS(dec.probe(huge.data(), huge.size()), DecodeError);
        g_track = false;
        CHECK(g_max_alloc.load() < (1u << 20));
        still_works();
        Decoder small(DecodeOptions{DecodeLimits{1000, 1 << 20}, true, 0.5, true});
        CHECK(failure_of(small, good) == DecodeFailure::too_large);  // 64 * 48 > 1000 pixels
        if (!test_images().variants) return require_variants();
        struct Case {
            const char* name;
            DecodeFailure reason;
        };
        for (Case c : {Case{"truncated.jpg", DecodeFailure::truncated},
                       {"garbage.jpg", DecodeFailure::unsupported},
                       {"empty.jpg", DecodeFailure::zero_bytes},
                       {"huge_header.jpg", DecodeFailure::too_large},
                       {"zero_dims.jpg", DecodeFailure::corrupt},
                       {"precision12.jpg", DecodeFailure::unsupported},
                       {"corrupt_header.jpg", DecodeFailure::corrupt}}) {  // TurboJPEG reports a 0x0 header here
            CAPTURE(c.name);
            const std::vector<uint8_t> b = bytes_of(test_images().variant(c.name));
            g_max_alloc = 0;
            g_track = true;
            CHECK(failure_of(dec, b) == c.reason);
            CHECK_THROWS_AS(dec.decode_for_crop(b.data(), b.size(), CropBox{0, 0, 8, 8}, 8), DecodeError);
            g_track = false;
            CHECK(g_max_alloc.load() < (8u << 20));
            try {
                dec.decode(b.data(), b.size());
            } catch (const DecodeError& e) {
                CHECK(std::string(e.what()).find(to_string(c.reason)) != std::string::npos);
            }
            still_works();
        }
        const std::vector<uint8_t> png = bytes_of(test_images().variant("png_rgb.png"));  // stb_image errors
        CHECK_THROWS_AS(dec.decode(png.data(), png.size() / 2), DecodeError);
        CHECK_THROWS_AS(dec.decode(png.data(), 30), DecodeError);
        still_works();
    }

    TEST_CASE("decode: DCT scale choice and the boxes mapped into scaled pixels") {
        CHECK(pick_scale(1792, 1792, 224, 224).num * 8 == pick_scale(1792, 1792, 224, 224).den);  // 1/8
        const ScaleFactor s38 = pick_scale(1000, 800, 224, 224, true);                            // 800 s >= 224
        CHECK(double(s38.num) / s38.den == doctest::Approx(3.0 / 8));
        const ScaleFactor s12 = pick_scale(1000, 800, 224, 224);  // powers of two only: 1/4 gives 200 < 224
        CHECK(double(s12.num) / s12.den == doctest::Approx(0.5));
        const ScaleFactor half = pick_scale(448, 450, 224, 224);
        CHECK(double(half.num) / half.den == doctest::Approx(0.5));
        CHECK(pick_scale(100, 300, 224, 224).num == pick_scale(100, 300, 224, 224).den);  // upscaling: full scale
        const std::vector<uint8_t> src = synthetic_rgb(1283, 1107);
        const std::vector<uint8_t> jpg = tj_compress(src, 1283, 1107, TJSAMP_420);
        DecodeOptions frac_opts;
        frac_opts.fractional_scales = true;
        Decoder dec, frac(frac_opts);
        const std::vector<CropRequest> crops = {{{10, 20, 1000, 1000}, 96, 96}, {{500, 400, 200, 180}, 96, 96}};
        const CropSource cs = frac.decode_for_crops(jpg.data(), jpg.size(), crops);
        CHECK(cs.image.scale_num * 8 == cs.image.scale_den * 5);  // the 180 px box needs 180 s >= 96 -> 5/8
        REQUIRE(cs.boxes.size() == 2);
        CHECK(cs.boxes[1].x1 - cs.boxes[1].x0 == doctest::Approx(125));
        CHECK(cs.boxes[1].y1 - cs.boxes[1].y0 == doctest::Approx(112.5));
        CHECK(dec.decode_for_crops(jpg.data(), jpg.size(), crops).image.scale_den == 1);  // 1/2 gives 90 < 96
        const CropSource big = dec.decode_for_crops(jpg.data(), jpg.size(), {{{0, 0, 1283, 1107}, 224, 224}});
        CHECK(big.image.scale_den == 4);  // 1107 / 4 >= 224
        CHECK(big.image.width == (1283 + 3) / 4);
        CHECK(big.boxes[0].x1 == doctest::Approx(1283 / 4.0));
        const Image full = dec.decode(jpg.data(), jpg.size(), 300);  // shorter side 1107 s >= 300 -> 1/2
        CHECK(full.width == (1283 + 1) / 2);
        CHECK(full.height == (1107 + 1) / 2);
        CHECK(frac.decode(jpg.data(), jpg.size(), 300).width == (1283 * 3 + 7) / 8);
        // Region decode (a 7% box) against the full decode at the same scale: same pixels up to edge effects.
        Decoder region(DecodeOptions{DecodeLimits{}, true, 0.5, true}),
            whole(DecodeOptions{DecodeLimits{}, true, 0, true});
        for (CropBox box : {CropBox{333, 211, 301, 257}, CropBox{0, 0, 250, 250}, CropBox{1000, 850, 283, 257}}) {
            const CropSource r = region.decode_for_crop(jpg.data(), jpg.size(), box, 128);
            const CropSource w = whole.decode_for_crop(jpg.data(), jpg.size(), box, 128);
            CHECK(r.region);
            CHECK(r.image.width * r.image.height < w.image.width * w.image.height / 4);
            std::vector<uint8_t> a(128 * 128 * 3), b(a.size());
            resize_bicubic_aa(r.image.rgb.data(), r.image.width, r.image.height, r.image.stride(), r.boxes[0], a.data(),
                              128, 128);
            resize_bicubic_aa(w.image.rgb.data(), w.image.width, w.image.height, w.image.stride(), w.boxes[0], b.data(),
                              128, 128);
            CHECK(test::max_abs_diff(a.data(), b.data(), a.size()) == 0);  // the region's margin hides its borders
        }
    }

    TEST_CASE("crop: RandomResizedCrop ranges, determinism and the centre fallback") {
        int fallbacks = 0;
        double mean_scale = 0;
        const int draws = 3000;
        for (int i = 0; i < draws; ++i) {
            Rng rng = Rng::for_view(7, 3, i, i % 8);
            bool fb = false;
            const CropBox b = random_resized_crop_box(500, 375, 0.08, 1.0, 3.0 / 4, 4.0 / 3, rng, &fb);
            fallbacks += fb;
            REQUIRE((b.w > 0 && b.h > 0 && b.x >= 0 && b.y >= 0 && b.x + b.w <= 500 && b.y + b.h <= 375));
            if (fb) continue;
            const double scale = double(b.w) * b.h / (500.0 * 375), ratio = double(b.w) / b.h;
            CHECK(scale >= 0.08 * 0.9);
            CHECK(scale <= 1.0);
            CHECK(ratio >= 0.75 * 0.95);
            CHECK(ratio <= 4.0 / 3 * 1.05);
            mean_scale += scale;
        }
        CHECK(fallbacks < draws / 50);
        CHECK(mean_scale / (draws - fallbacks) == doctest::Approx(0.5).epsilon(0.1));
        Rng a = Rng::for_view(1, 2, 3, 4), b = Rng::for_view(1, 2, 3, 4), c = Rng::for_view(1, 2, 3, 5);
        const CropBox ba = random_resized_crop_box(640, 480, 0.05, 0.3, 0.75, 4.0 / 3, a);
        CHECK(ba == random_resized_crop_box(640, 480, 0.05, 0.3, 0.75, 4.0 / 3, b));
        CHECK_FALSE(ba == random_resized_crop_box(640, 480, 0.05, 0.3, 0.75, 4.0 / 3, c));
        bool fb = false;
        CHECK(random_resized_crop_box(1000, 50, 0.3, 1.0, 0.75, 4.0 / 3, a, &fb) == CropBox{466, 0, 67, 50});
        CHECK(fb);
        CHECK(random_resized_crop_box(50, 1000, 0.3, 1.0, 0.75, 4.0 / 3, a, &fb) == CropBox{0, 466, 50, 67});
        CHECK(fb);
        std::vector<int> hist(7, 0);
        for (int i = 0; i < 7000; ++i) ++hist[size_t(a.randint(0, 7))];
        for (int h : hist) CHECK(std::abs(h - 1000) < 150);
    }

    TEST_CASE("crop: resampling identities, windowed eval transform, flip") {
        const int w = 301, h = 203;
        const std::vector<uint8_t> src = synthetic_rgb(w, h);
        std::vector<uint8_t> out(size_t(w) * h * 3);
        resize_bicubic_aa(src.data(), w, h, w * 3, CropBox{0, 0, w, h}, out.data(), w, h);
        CHECK(out == src);
        std::vector<uint8_t> a(97 * 61 * 3), b(a.size());
        resize_bicubic_aa(src.data(), w, h, w * 3, CropBox{13, 7, 250, 171}, a.data(), 97, 61);
        resize_bicubic_aa(src.data(), w, h, w * 3, BoxF{13, 7, 263, 178}, b.data(), 97, 61);
        CHECK(a == b);
        const std::vector<uint8_t> flat(size_t(w) * h * 3, 77);
        resize_bicubic_aa(flat.data(), w, h, w * 3, CropBox{5, 5, 200, 150}, a.data(), 97, 61);
        CHECK(std::all_of(a.begin(), a.end(), [](uint8_t v) { return v == 77; }));
        int nw = 0, nh = 0;
        resized_short_side_size(w, h, 256, &nw, &nh);
        CHECK(nw == 379);  // int(256 * 301 / 203)
        CHECK(nh == 256);
        std::vector<uint8_t> full(size_t(nw) * nh * 3), crop(224 * 224 * 3);
        resize_bicubic_aa(src.data(), w, h, w * 3, CropBox{0, 0, w, h}, full.data(), nw, nh);
        resize_center_crop(src.data(), w, h, w * 3, 256, 224, crop.data());
        const int left = 78, top = 16;  // round((379 - 224) / 2) = round(77.5) = 78 (half to even); (256 - 224) / 2
        for (int y = 0; y < 224; ++y)
            REQUIRE(std::memcmp(&crop[size_t(y) * 224 * 3], &full[(size_t(y + top) * nw + left) * 3], 224 * 3) == 0);
        std::vector<uint8_t> f = src;
        hflip(f.data(), w, h, w * 3);
        CHECK(f[0] == src[(w - 1) * 3]);
        hflip(f.data(), w, h, w * 3);
        CHECK(f == src);
        CHECK_THROWS_AS(resize_bicubic_aa(src.data(), w, h, w * 3, CropBox{200, 0, 102, 10}, a.data(), 9, 9), Error);
    }

    TEST_CASE("dataset: ImageFolder labels, cache reuse and invalidation, errors") {
        const std::string root = test::test_images_dir() + "_folder";
        std::system(
            ("rm -rf '" + root + "' && mkdir -p '" + root + "/b_dog' '" + root + "/a_cat/sub' '" + root + "/c_owl'")
                .c_str());
        for (const char* f :
             {"b_dog/2.jpg", "b_dog/1.JPEG", "b_dog/notes.txt", "a_cat/z.png", "a_cat/sub/y.jpg", "c_owl/x.Jpg"})
            std::fclose(std::fopen((root + "/" + f).c_str(), "w"));
        auto age = [&](const std::string& d) {  // an mtime far from now, so that a later change is always visible
            const timespec t[2] = {{1000000, 0}, {1000000, 0}};
            ::utimensat(AT_FDCWD, (root + d).c_str(), t, 0);
        };
        for (const char* d : {"", "/b_dog", "/a_cat", "/a_cat/sub", "/c_owl"}) age(d);
        const Dataset d1 = Dataset::image_folder(root);
        CHECK_FALSE(d1.loaded_from_cache());
        REQUIRE(d1.size() == 5);
        CHECK(d1.classes() == std::vector<std::string>{"a_cat", "b_dog", "c_owl"});
        CHECK(d1.path(0) == root + "/a_cat/z.png");
        CHECK(d1.path(1) == root + "/a_cat/sub/y.jpg");
        CHECK(d1.path(2) == root + "/b_dog/1.JPEG");
        CHECK(d1.label(3) == 1);
        CHECK(d1.label(4) == 2);
        age("");  // the cache file was written into the root
        const Dataset d2 = Dataset::image_folder(root);
        CHECK(d2.loaded_from_cache());
        REQUIRE(d2.size() == 5);
        for (int64_t i = 0; i < 5; ++i) CHECK((d2.path(i) == d1.path(i) && d2.label(i) == d1.label(i)));
        std::fclose(std::fopen((root + "/a_cat/sub/w.jpg").c_str(), "w"));  // changes a nested folder's mtime
        const Dataset d3 = Dataset::image_folder(root);
        CHECK_FALSE(d3.loaded_from_cache());
        CHECK(d3.size() == 6);
        const std::string cache_dir = root + "_cache";
        const Dataset d4 = Dataset::image_folder(root, IndexOptions{cache_dir, true});
        CHECK(d4.cache_path().rfind(cache_dir, 0) == 0);
        CHECK(Dataset::image_folder(root, IndexOptions{cache_dir, true}).loaded_from_cache());
        auto throws_naming = [](auto fn, const std::string& what) {
            try {
                fn();
                FAIL("no error for ", what);
            } catch (const IoError& e) {
                CHECK_MESSAGE(std::string(e.what()).find(what) != std::string::npos, e.what());
            }
        };
        throws_naming([&] { Dataset::image_folder(root + "/missing"); }, root + "/missing");
        std::system(("mkdir -p '" + root + "/d_empty'").c_str());
        throws_naming([&] { Dataset::image_folder(root); }, "d_empty");
        throws_naming([&] { Dataset::image_folder(root + "/c_owl"); }, root + "/c_owl");  // no class folder
        throws_naming([&] { Dataset::list_file(root + "/nope.txt"); }, root + "/nope.txt");
        // List files: relative paths against the list's folder, comments, spaces in paths, bad lines.
        std::ofstream(root + "/list.txt") << "# comment\nb_dog/1.JPEG 3\n\n/abs/with space.jpg  0\n";
        const Dataset l = Dataset::list_file(root + "/list.txt");
        REQUIRE(l.size() == 2);
        CHECK(l.path(0) == root + "/b_dog/1.JPEG");
        CHECK(l.path(1) == "/abs/with space.jpg");
        CHECK(l.num_classes() == 4);
        std::ofstream(root + "/bad.txt") << "a.jpg 1\nb.jpg x\n";
        throws_naming([&] { Dataset::list_file(root + "/bad.txt"); }, "line 2");
        std::ofstream(root + "/empty.txt") << "# nothing\n";
        throws_naming([&] { Dataset::list_file(root + "/empty.txt"); }, root + "/empty.txt");
        std::system(("rm -rf '" + root + "' '" + cache_dir + "'").c_str());
    }

    TEST_CASE("sampler: equal shards, disjoint, per-epoch shuffles, deterministic") {
        for (bool drop_last : {false, true}) {
            for (auto [n, world] : {std::pair<int64_t, int>{10, 3}, {1001, 8}, {7, 7}, {5, 1}}) {
                CAPTURE(n);
                CAPTURE(world);
                std::multiset<int64_t> all;
                for (int r = 0; r < world; ++r) {
                    const Sampler s(n, r, world, 42, drop_last);
                    const std::vector<int64_t> idx = s.epoch_indices(3);
                    CHECK(int64_t(idx.size()) == (drop_last ? n / world : (n + world - 1) / world));
                    CHECK(idx == Sampler(n, r, world, 42, drop_last).epoch_indices(3));
                    all.insert(idx.begin(), idx.end());
                }
                const std::set<int64_t> distinct(all.begin(), all.end());
                CHECK(int64_t(distinct.size()) == (drop_last ? n / world * world : n));  // padding repeats only
                CHECK(*distinct.rbegin() < n);
            }
        }
        const Sampler s(1000, 1, 4, 9, true);
        CHECK(s.epoch_indices(0) != s.epoch_indices(1));
        CHECK(s.epoch_indices(0) != Sampler(1000, 1, 4, 10, true).epoch_indices(0));
        const std::vector<int64_t> plain = Sampler(10, 1, 3, 0, false, false).epoch_indices(5);
        CHECK(plain == std::vector<int64_t>{1, 4, 7, 0});  // no shuffle: positions 1, 4, 7, 10 (padding wraps to 0)
        CHECK_THROWS_AS(Sampler(10, 3, 3, 0, false), Error);
        CHECK_THROWS_AS(Sampler(2, 0, 3, 0, true), Error);
    }

}  // TEST_SUITE
