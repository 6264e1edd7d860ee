// Regression tests for what the sanitizers and the fuzzers (fuzz/, issue 10) found on the input paths, each with
// the input that triggered it, and the input caps of docs/LIMITS.md (list-file line length and NUL bytes, JSON
// depth, safetensors tensor sizes bounded by the file's data bytes, TOML size and nesting, checkpoint positions,
// index caches). Nothing here is differentiable.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/embedded_data.h"
#include "apps/pretrain.h"
#include "apps/toml.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "engine/check.h"
#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "engine/optim/optimizer.h"
#include "kernels/augment.h"
#include "tests/tiny_run.h"

using namespace sslight;

namespace {

std::string tmp_path(const char* name) {
    return std::string("/tmp/sslight_test_regressions_") + std::to_string(::getpid()) + "_" + name;
}

std::string write_tmp(const char* name, const std::string& bytes) {
    const std::string path = tmp_path(name);
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
}

// A safetensors file: 8-byte little-endian header length, the header, the data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(header.size()) >> (8 * i)) & 0xff);
    return out + header + data;
}

// fuzz_decode, JPEGs that TurboJPEG rejects and that data/decode.cpp then handed to stb_image 2.27's JPEG decoder:
// a DHT segment whose 16 code counts sum to more than 256 (stb wrote past stbi__huffman::size[257]), and a
// progressive scan using a Huffman table never defined (stb read past stbi__huffman::maxcode[18]). Fixed by not
// compiling stb_image's JPEG decoder at all; without the fix the sanitized build (scripts/run_sanitized_tests.sh)
// stops on these inputs.
const uint8_t kJpegHuffmanOverflow[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01,
    0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x08, 0x06, 0x06, 0x07, 0x06, 0x05, 0x08, 0x07, 0x07, 0x07, 0x09,
    0x09, 0x08, 0x0a, 0x0c, 0x14, 0x0d, 0x0c, 0x0b, 0x0b, 0x0c, 0x19, 0x12, 0x13, 0x0f, 0x14, 0x1d, 0x1a, 0x1f,
    0x1e, 0x1d, 0x1a, 0x1c, 0x1c, 0x20, 0x24, 0x2e, 0x27, 0x20, 0x22, 0x2c, 0x23, 0x1c, 0x1c, 0x28, 0x37, 0x29,
    0x2c, 0x30, 0x31, 0x34, 0x34, 0x34, 0x1f, 0x27, 0x39, 0x3d, 0x38, 0x32, 0x3c, 0x2e, 0x33, 0x34, 0x32, 0xff,
    0xe0, 0x00, 0x0b, 0x08, 0x00, 0x0d, 0x00, 0x15, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0xfe, 0x1e, 0x00, 0x00,
    0x07, 0x93, 0xd7, 0x0c, 0x7f, 0x3a, 0xd8, 0x4f, 0x0e, 0x5a, 0x35, 0xfd, 0xac, 0x47, 0xee, 0x2c, 0x41, 0x80,
    0xda, 0x3a, 0x92, 0x73, 0xfc, 0x85, 0x6c, 0x5c, 0x78, 0x6a, 0xce, 0x4b, 0xd9, 0x55, 0xb9, 0x08, 0xa8, 0xab,
    0xf2, 0x8e, 0x06, 0x33, 0xfc, 0xc9, 0xaf, 0xff, 0xd9};

const uint8_t kJpegUndefinedTable[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01,
    0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x08, 0x06, 0x06, 0x07, 0x06, 0x05, 0x08, 0x07, 0x07, 0x07, 0x09,
    0x09, 0x08, 0x0a, 0x0c, 0x14, 0x0d, 0x0c, 0x0b, 0x0b, 0x0c, 0x19, 0x12, 0x13, 0x0f, 0x14, 0x1d, 0x1a, 0x1f,
    0x1e, 0x1d, 0x1a, 0x1c, 0x1c, 0x20, 0x24, 0x2e, 0x27, 0x20, 0x22, 0x2c, 0x23, 0x1c, 0x1c, 0x28, 0x38, 0x29,
    0x2c, 0x30, 0x31, 0x34, 0x34, 0x34, 0x1f, 0x27, 0x39, 0x3d, 0x38, 0x32, 0x3c, 0x2e, 0x33, 0x34, 0x32, 0xff,
    0xdb, 0x00, 0x43, 0x01, 0xf5, 0xf6, 0xf6, 0xf3, 0x0b, 0x0c, 0x18, 0x0d, 0x0d, 0x18, 0x32, 0x21, 0x1c, 0x21,
    0x32, 0x32, 0x32, 0x32, 0x28, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
    0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
    0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0xff, 0xc2, 0x00, 0x11,
    0x08, 0x00, 0x18, 0x00, 0x28, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x00,
    0x18, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 0x02, 0x04, 0x01, 0xff, 0xc4, 0x00, 0x19, 0x01, 0x00, 0x02, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x02, 0x03, 0x05, 0xff, 0xda, 0x00, 0x0c,
    0x03, 0x01, 0x00, 0x02, 0x10, 0x02, 0x10, 0x00, 0x00, 0x01, 0xe4, 0xe8, 0x8f, 0x14, 0x21, 0x12, 0x13, 0x31,
    0x42, 0x71, 0xff, 0xda, 0x00, 0x08, 0x01, 0x02, 0x01, 0x01, 0x3f, 0x01, 0xa6, 0xbe, 0xe7, 0x2c, 0xd3, 0x6f,
    0x42, 0x9c, 0x60, 0xb1, 0x9b, 0x45, 0x3e, 0x8a, 0x3e, 0x99, 0x55, 0xad, 0x5e, 0x9c, 0xb2, 0x71, 0xe2, 0x52,
    0xa5, 0xba, 0x57, 0x38, 0xcc, 0x28, 0x10, 0x95, 0x59, 0xff, 0xc4, 0x00, 0x21, 0x10, 0x00, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x00, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x11, 0x03, 0x21,
    0x12, 0x30, 0x41, 0x51, 0x13, 0x22, 0x61, 0x91, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x06, 0x3f, 0x02,
    0x3a, 0xfc, 0x81, 0x59, 0x91, 0x49, 0xf0, 0x4c, 0x09, 0xca, 0xc8, 0xde, 0x84, 0x55, 0x4c, 0x24, 0xd7, 0x0b,
    0xa8, 0x78, 0xe3, 0x40, 0xbd, 0x0b, 0x88, 0x8c, 0xec, 0xc3, 0xba, 0x26, 0x01, 0x5d, 0x42, 0x4e, 0x45, 0x35,
    0xad, 0x18, 0x5b, 0xee, 0xc3, 0xbd, 0x08, 0xc4, 0x61, 0xdf, 0x82, 0x5a, 0x5b, 0x64, 0x61, 0x5e, 0xb5, 0x1b,
    0x2b, 0x5c, 0xc2, 0x59, 0x63, 0xec, 0xaa, 0x83, 0xad, 0x9a, 0x9c, 0x3e, 0x41, 0xfc, 0xb8, 0xaa, 0xb8, 0x9c,
    0xb7, 0x74, 0x67, 0xff, 0xc4, 0x00, 0x21, 0x10, 0x01, 0x00, 0x02, 0x02, 0x02, 0x02, 0x02, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x11, 0x21, 0x41, 0x8a, 0x16, 0x7e, 0x1e, 0x8e, 0x7f, 0xff,
    0xd9};

// fuzz_decode: a PNG whose first IDAT chunk is empty: stb_image calls memcpy(NULL, src, 0) (suppressed in
// tests/sanitizers/ubsan.supp: nothing is copied); the file must still fail or decode cleanly.
const uint8_t kPngEmptyIdat[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x09, 0x00, 0x00, 0x00, 0x0e, 0x08, 0x06, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0xb5, 0xcc, 0x31, 0x0e, 0xc0, 0x20, 0x0c, 0x43, 0x51, 0x53, 0x30,
    0x41, 0xca, 0x19, 0x18, 0x73, 0xff, 0x23, 0xb6, 0x4b, 0x85, 0x68, 0x45, 0x52, 0x96, 0x0e, 0x5f, 0x5e, 0x9e,
    0x9c, 0x00, 0x9c, 0x46, 0x20, 0xaa, 0x68, 0x07, 0x94, 0x29, 0x6c, 0x42, 0x87, 0xdb, 0x0b, 0xe5, 0x65, 0x0b,
    0x54, 0x46, 0x76, 0xaf, 0x83, 0xf8, 0x28, 0x40, 0x75, 0xe4, 0x22, 0x63, 0x85, 0x52, 0xa0, 0x94, 0xaf, 0x27,
    0x81, 0xb2, 0x39, 0xa8, 0x6f, 0x20, 0xdb, 0x7a, 0xfa, 0x0d, 0x5d, 0x67, 0xd9, 0x0c, 0xf3, 0x31, 0xf6, 0x13,
    0x46, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

// fuzz_decode: a 101-byte PNG whose chunk lengths made stb_image grow its IDAT buffer to 2 GiB before noticing the
// file ends (libFuzzer: out-of-memory, malloc(2147483648)).
const uint8_t kPngHugeChunk[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x0b, 0x00, 0x00, 0x00, 0x05, 0x08, 0x00, 0x00, 0x00, 0x00, 0xb6, 0xcd, 0x49, 0x8a, 0x00, 0x00, 0x00,
    0x2b, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x3d, 0xc8, 0xa1, 0x11, 0x00, 0x20, 0x0c, 0x04, 0x31, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0x00, 0x79, 0x33, 0x1c, 0x91, 0xd9, 0x0b, 0x18, 0xd4, 0x11, 0xb8, 0xa8, 0x46, 0xe8,
    0xff, 0xd1, 0xa4, 0x4e, 0x44, 0x00, 0x05, 0x08, 0x00, 0x00, 0x00, 0x00, 0xb6, 0xcd, 0x49, 0x8a, 0x51, 0x00,
    0x00, 0x2b, 0x49, 0x44, 0x41, 0x54, 0x00, 0x00, 0x00, 0x49, 0x45};

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const IoError& e) {
        return e.what();
    }
    return "";
}

std::string config_error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

// A method with real layers (Linear, BatchNorm with its host counter) and a MoCo-like host buffer, small enough
// for checkpoint tests (the same shape as fuzz/fuzz_checkpoint.cpp's).
class TinyMethod : public ssl::Method {
public:
    TinyMethod() : Method("TinyMethod") {
        nn::init_generator() = Generator(7);
        const std::vector<std::shared_ptr<nn::Module>> layers = {std::make_shared<nn::Linear>(3, 4),
                                                                 std::make_shared<nn::BatchNorm>(4, false)};
        student = register_module("student", std::make_shared<nn::Sequential>(layers));
        register_buffer("queue_ptr", &queue_ptr, zeros({}, DType::i64), /*host=*/true);
    }
    Tensor forward_loss(const ssl::Views&, const ssl::StepContext&) override { throw Error("not used"); }
    void after_optimizer_step(const ssl::StepContext&) override {}
    std::vector<optim::ParamGroup> param_groups(double lr, double wd) override {
        return optim::ssl_param_groups(*student, lr, wd);
    }
    models::Backbone& student_backbone() override { throw Error("not used"); }
    std::shared_ptr<nn::Sequential> student;
    Tensor queue_ptr;
};

// Replaces one metadata field (or, with a tensor, one tensor) of a safetensors file in place.
void rewrite(const std::string& path, const std::string& key, const std::string& value, const Tensor& t = {}) {
    io::Metadata md;
    io::TensorMap tensors = io::load_safetensors(path, &md);
    if (t.defined())
        tensors[key] = t;
    else
        md[key] = value;
    io::save_safetensors(path, tensors, md);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("safetensors: a shape whose byte size wraps 2^64 is rejected, not allocated as 0 bytes") {
        // numel = 2^62 passed the shape check and numel * 8 (F64) or * 4 (F32) wrapped to 0, matching
        // data_offsets [0, 0]: the reader returned a tensor of 2^62 elements over an empty buffer.
        const char* headers[] = {
            R"({"w":{"dtype":"F64","shape":[2147483648,2147483648],"data_offsets":[0,0]}})",
            R"({"w":{"dtype":"F32","shape":[4294967296,1073741824],"data_offsets":[0,0]}})",
            R"({"w":{"dtype":"I32","shape":[1099511627776,4194304],"data_offsets":[0,0]}})"};
        for (const char* h : headers) {
            const std::string bytes = safetensors_bytes(h, "");
            const std::string msg = error_of([&] { io::load_safetensors_from_memory(bytes, "wrap.st"); });
            CHECK_MESSAGE(msg.find("wrap.st: tensor 'w'") != std::string::npos, h, " -> ", msg);
        }
    }

    TEST_CASE("safetensors: from memory equals from file; a tensor never exceeds the file's data bytes") {
        const std::string data = std::string("\x01\x02\x03\x04\x05\x06\x07", 7);
        const std::string ok = safetensors_bytes(R"({"u":{"dtype":"U8","shape":[7],"data_offsets":[0,7]}})", data);
        const io::TensorMap a = io::load_safetensors_from_memory(ok, "mem");
        const io::TensorMap b = io::load_safetensors(write_tmp("ok.safetensors", ok));
        REQUIRE(a.at("u").numel() == 7);
        REQUIRE(b.at("u").numel() == 7);
        CHECK(static_cast<const uint8_t*>(a.at("u").raw_data())[6] == 7);
        CHECK(static_cast<const uint8_t*>(b.at("u").raw_data())[6] == 7);
        const std::string big = safetensors_bytes(R"({"u":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data);
        CHECK(error_of([&] { io::load_safetensors_from_memory(big, "big"); }).find("big: tensor 'u'") == 0);
        CHECK(error_of([&] { io::load_safetensors_from_memory(std::string(5, 'x'), "short"); }).find("short") == 0);
        std::remove(tmp_path("ok.safetensors").c_str());
    }

    TEST_CASE("decode: JPEGs TurboJPEG rejects are DecodeErrors and never reach stb_image") {
        for (bool region : {false, true}) {
            data::DecodeOptions o;
            o.region_max_fraction = region ? 1.0 : 0.0;
            data::Decoder dec(o);
            using Input = std::pair<const uint8_t*, size_t>;
            for (const Input& in : {Input{kJpegHuffmanOverflow, sizeof kJpegHuffmanOverflow},
                                    Input{kJpegUndefinedTable, sizeof kJpegUndefinedTable}}) {
                const std::string msg =
                    error_of([&] { dec.decode_for_crop(in.first, in.second, data::CropBox{0, 0, 4, 4}, 4); });
                CHECK_MESSAGE(msg.find("(corrupt): JPEG header: ") != std::string::npos, msg);
            }
            // The decoder stays usable: a PNG (with an empty first IDAT chunk) right after.
            const std::string png = error_of([&] {
                const data::Image img = dec.decode(kPngEmptyIdat, sizeof kPngEmptyIdat);
                CHECK(img.width == 9);
                CHECK(img.height == 14);
            });
            CHECK_MESSAGE((png.empty() || png.find("(corrupt): PNG: ") != std::string::npos), png);
        }
    }

    TEST_CASE("decode: a PNG chunk longer than the file is an error before stb_image allocates for it") {
        data::Decoder dec;
        const std::string msg = error_of([&] { dec.probe(kPngHugeChunk, sizeof kPngHugeChunk); });
        CHECK_MESSAGE(msg.find("(corrupt): PNG: a chunk is longer than the 101-byte file") != std::string::npos, msg);
        CHECK_THROWS_AS(dec.decode(kPngHugeChunk, sizeof kPngHugeChunk), data::DecodeError);
    }

    TEST_CASE("json: nesting is capped at 64 levels, deeper input is an error not a stack overflow") {
        CHECK_NOTHROW(json::parse(std::string(64, '[') + std::string(64, ']')));
        CHECK(error_of([] { json::parse(std::string(66, '[') + std::string(66, ']')); }).find("deeper than 64") !=
              std::string::npos);
        CHECK(error_of([] { json::parse(std::string(100000, '[')); }).find("deeper than 64") != std::string::npos);
    }

    TEST_CASE("ImageFolder: a corrupt index cache with a huge class count is rebuilt, not allocated") {
        // load_cache did classes_.resize(count) with the count read from the cache file: 2^40 strings.
        const std::string root = tmp_path("folder"), cache_dir = tmp_path("folder_cache");
        REQUIRE(std::system(("mkdir -p '" + root + "/cat' '" + root + "/dog'").c_str()) == 0);
        write_tmp("folder/cat/a.jpg", "x");
        write_tmp("folder/dog/b.png", "y");
        const data::IndexOptions opts{cache_dir, true};
        const data::Dataset first = data::Dataset::image_folder(root, opts);
        REQUIRE(first.size() == 2);
        std::ifstream in(first.cache_path());
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const size_t at = text.find("classes 2\n");
        REQUIRE(at != std::string::npos);
        text.replace(at, 10, "classes 1099511627776\n");
        std::ofstream(first.cache_path(), std::ios::binary) << text;
        const data::Dataset again = data::Dataset::image_folder(root, opts);
        CHECK_FALSE(again.loaded_from_cache());
        CHECK(again.size() == 2);
        CHECK(again.classes().size() == 2);
        CHECK(std::system(("rm -rf '" + root + "' '" + cache_dir + "'").c_str()) == 0);
    }

    TEST_CASE("list file: line length cap, NUL bytes, a last line without newline") {
        const std::string good = write_tmp("good.txt", "a.jpg 0\n\n# c\nb c.jpg\t2\r\n/abs/d.png 1");
        const data::Dataset ds = data::Dataset::list_file(good);
        REQUIRE(ds.size() == 3);
        CHECK(ds.label(2) == 1);
        CHECK(ds.path(2) == "/abs/d.png");
        CHECK(ds.num_classes() == 3);

        const std::string long_line =
            write_tmp("long.txt", "a.jpg 0\n" + std::string(data::kMaxListLineBytes + 1, 'x'));
        CHECK(error_of([&] { data::Dataset::list_file(long_line); }).find("line 2 is longer than") !=
              std::string::npos);
        const std::string at_cap = write_tmp("atcap.txt", std::string(data::kMaxListLineBytes - 2, 'p') + " 4\n");
        CHECK(data::Dataset::list_file(at_cap).num_classes() == 5);
        const std::string nul = write_tmp("nul.txt", std::string("a.jpg 0\nb\0c.jpg 1\n", 18));
        CHECK(error_of([&] { data::Dataset::list_file(nul); }).find("line 2: NUL byte") != std::string::npos);
        for (const char* n : {"good.txt", "long.txt", "atcap.txt", "nul.txt"}) std::remove(tmp_path(n).c_str());
    }
    TEST_CASE("toml: nested arrays are refused before recursing; many keys parse in linear time; size cap") {
        // fuzz_config: "a = [[[[..." recursed once per '[' until the stack overflowed (ASan: stack-overflow in
        // Parser::parse_value at ~15,000 levels under the sanitizers).
        const std::string deep = "a = " + std::string(30000, '[');
        CHECK(contains(config_error_of([&] { apps::toml::parse(deep, "deep.toml"); }),
                       "deep.toml:1:6: arrays of arrays are not supported"));
        // Duplicate keys were found with a linear Document::find per key: 8,000 keys took 12 s under ASan.
        std::string many;
        for (int i = 0; i < 50000; ++i) many += "k" + std::to_string(i) + " = " + std::to_string(i) + "\n";
        const apps::toml::Document doc = apps::toml::parse(many, "many.toml");
        CHECK(doc.entries.size() == 50000);
        CHECK(contains(config_error_of([&] { apps::toml::parse(many + "k77 = 1\n", "many.toml"); }),
                       "many.toml:50001:1: the key 'k77' is defined twice"));
        const std::string big(apps::toml::kMaxTomlBytes + 1, '#');
        CHECK(contains(config_error_of([&] { apps::toml::parse(big, "big.toml"); }), "more than the 1048576 accepted"));
        const std::string big_file = write_tmp("big.toml", big);
        CHECK(contains(config_error_of([&] { apps::load_config(big_file); }), "more than 1048576 bytes"));
        std::remove(big_file.c_str());
        CHECK(contains(config_error_of([] { apps::toml::parse("a = \"x\x01y\"\n", "c.toml"); }),
                       "control character \\x01 in a string"));
        CHECK(contains(config_error_of([] { apps::toml::parse(std::string("a = 'x\0y'\n", 10), "c.toml"); }),
                       "control character \\x00 in a string"));
        CHECK(contains(config_error_of([] { apps::toml::parse(std::string("\0", 1), "c.toml"); }),
                       "expected a key, found '\\x00'"));
    }

    TEST_CASE("config: the canonical text (config.resolved.toml) loads back to the same config") {
        // fuzz_config, first input (an empty file): the defaults' canonical text had "data.global_scale = []" and
        // "method.lambda_gg = nan" (the recipe's values), which the loader refused, and strings were not escaped.
        for (const std::string& text :
             {std::string(""), std::string(apps::builtin_demo_config()),
              std::string("[run]\nname = \"q\\\"uote\\\\ \\t\\n\"\n[data]\nglobal_scale = [0.3, 1]\n"),
              std::string("[method]\nlambda_gg = nan\n[optim]\nfinal_lr = -0.0\n[data]\nlocal_scale = []\n")}) {
            const apps::PretrainConfig c = apps::parse_config(text, "in.toml");
            const std::string canon = apps::canonical_text(c);
            const apps::PretrainConfig back = apps::parse_config(canon, "in.toml");
            CHECK_MESSAGE(apps::canonical_text(back) == canon, text);
            CHECK(apps::config_hash(back) == apps::config_hash(c));
        }
        const apps::PretrainConfig q = apps::parse_config("[run]\nname = \"a\\\"b\"\n", "q.toml");
        CHECK(contains(apps::canonical_text(q), "run.name = \"a\\\"b\"\n"));
        CHECK(contains(apps::canonical_text(apps::parse_config("optim.final_lr = -0.0\n", "z.toml")),
                       "optim.final_lr = 0\n"));
        CHECK(contains(config_error_of([] { apps::parse_config("method.lambda_gg = 1.5\n", "l.toml"); }),
                       "expects a number in [0, 1] or nan (the recipe's)"));
        CHECK(contains(config_error_of([] { apps::parse_config("optim.base_lr = nan\n", "l.toml"); }), "got nan"));
        // fuzz_config: `--set run.name=<bytes with \x13>` (a bare word) put a control character in a string, which
        // the canonical text then could not carry back.
        CHECK(contains(config_error_of([] { apps::parse_config("", "s.toml", {"run.name=a\x13" "b"}); }),
                       "--set run.name: key 'run.name' expects a string without control characters"));
        CHECK(apps::parse_config("", "s.toml", {"run.name=a b"}).name == "a b");
    }

    TEST_CASE("config: every accepted size gives a valid view recipe (the scaled blur sigma is capped)") {
        // fuzz_config (10 s in CI): global_size 316 scaled the recipe's blur sigma 2 px (at 224) to 2.82 px, over the
        // 8/3 px the blur kernel takes, so `pretrain` refused a config load_config had accepted.
        const apps::PretrainConfig c = apps::parse_config(
            "[data]\nglobal_size = 316\n", "f.toml", {"data.local_size=16", "run.name=a b", "optim.optimizer=sgd"});
        const data::ViewRecipe r = apps::recipe_of(c);
        CHECK(r.globals[0].size == 316);
        CHECK(r.globals[0].blur_sigma_hi == doctest::Approx(kernels::kAugmentMaxBlurSigma));
        CHECK(r.globals[0].blur_sigma_lo == doctest::Approx(0.1 * 316 / 224));
        for (const char* size : {"data.global_size=4096", "data.local_size=4096", "data.global_size=1"})
            CHECK_NOTHROW(apps::recipe_of(apps::parse_config("", "s.toml", {size})));
        const data::ViewRecipe small = apps::recipe_of(apps::parse_config("", "s.toml", {"data.global_size=32"}));
        CHECK(small.globals[0].blur_sigma_hi == doctest::Approx(2.0 * 32 / 224));
    }

    TEST_CASE("checkpoint: the position is strict non-negative integers, consistent, within the run's epochs") {
        const std::string dir = tmp_path("ckpt");
        REQUIRE(std::system(("mkdir -p '" + dir + "'").c_str()) == 0);
        const apps::PretrainConfig cfg =
            apps::parse_config(apps::builtin_demo_config(), "r.toml", {"optim.optimizer=adamw"});
        TinyMethod m;
        optim::AdamW opt(m.param_groups(1e-3, 0.04));
        for (Tensor* p : m.student->parameters()) p->set_grad(full(p->shape(), 0.5));
        opt.step();
        const std::string path = apps::save_checkpoint(dir, m, opt, cfg, {7, 1, 2, 99}, 3);
        const std::string good = dir + "/good.safetensors";
        REQUIRE(std::system(("cp '" + path + "' '" + good + "'").c_str()) == 0);
        auto load = [&](const std::string& p) {
            TinyMethod fresh;
            optim::AdamW o(fresh.param_groups(1e-3, 0.04));
            return apps::load_checkpoint(p, fresh, &o, cfg);
        };
        const apps::TrainPosition pos = load(path);
        CHECK((pos.iteration == 7 && pos.epoch == 1 && pos.step == 2 && pos.init_counter == 99));
        // fuzz_checkpoint: "step" 22 of iteration 7 was accepted (and std::stoll let "-1", "1x" or an out-of-range
        // number through or throw std::invalid_argument / std::out_of_range instead of an IoError).
        const struct {
            const char* key;
            const char* value;
            const char* message;
        } bad[] = {{"step", "22", "inconsistent position: iteration 7, epoch 1, step 22"},
                   {"iteration", "-1", "metadata 'iteration' is '-1', expected an integer in [0, 9223372036854775807]"},
                   {"epoch", "1x", "metadata 'epoch' is '1x'"},
                   {"epoch", "3", "metadata 'epoch' is '3', expected an integer in [0, 2]"},
                   {"epoch", "", "metadata 'epoch' is ''"},
                   {"init_counter", "18446744073709551616", "metadata 'init_counter' is '18446744073709551616'"},
                   {"iteration", " 7", "metadata 'iteration' is ' 7'"}};
        for (const auto& b : bad) {
            REQUIRE(std::system(("cp '" + good + "' '" + path + "'").c_str()) == 0);
            rewrite(path, b.key, b.value);
            const std::string msg = error_of([&] { load(path); });
            CHECK_MESSAGE(contains(msg, b.message), b.key, "=", b.value, " -> ", msg);
        }
        // A negative optimizer step count made AdamW's bias correction divide by zero or take sqrt of a negative.
        REQUIRE(std::system(("cp '" + good + "' '" + path + "'").c_str()) == 0);
        rewrite(path, "optim.group0.param0.step", "", from_vector(std::vector<int64_t>{-1}, Shape{}));
        const std::string negative = error_of([&] { load(path); });
        CHECK_MESSAGE(contains(negative, "group0.param0.step must be one integer >= 0"), negative);
        CHECK(std::system(("rm -rf '" + dir + "'").c_str()) == 0);
    }

    TEST_CASE("pretrain: resuming from a checkpoint whose step does not fit the run's steps per epoch is refused") {
        // Iteration 8 = epoch 0, step 8 passes load_checkpoint's own checks; with 6 steps per epoch the embedded
        // path then sliced its permutation at [8·B, 9·B) past its end (a heap overflow under ASan).
        const apps::EmbeddedData data = apps::generated_digits(16, 4, 7);
        apps::PretrainOptions o;
        o.config = apps::parse_config(apps::builtin_demo_config(), "tiny.toml",
                                      {"run.batch_size=4", "data.global_size=16", "data.local_size=8",
                                       "data.n_local=1", "data.max_train_samples=24", "method.dino_out_dim=16",
                                       "method.dino_hidden_dim=16", "method.dino_bottleneck_dim=8",
                                       "eval.knn_at_end=false", "model.backbone=mobilenet_v2", "model.width_mult=0.25",
                                       "train.max_steps=1"});
        o.out_dir = tmp_path("resume");
        o.data = &data;
        o.progress = 0;
        const apps::PretrainResult first = apps::run_pretrain(o);
        REQUIRE(first.iterations == 1);
        rewrite(first.last_checkpoint, "iteration", "8");
        rewrite(first.last_checkpoint, "step", "8");
        o.resume = true;
        o.config.max_steps = 10;
        CHECK(contains(error_of([&] { apps::run_pretrain(o); }),
                       "its position (iteration 8, epoch 0, step 8) does not fit this run's 6 steps per epoch"));
        CHECK(std::system(("rm -rf '" + o.out_dir + "'").c_str()) == 0);
    }

    TEST_CASE("checkpoint: MoCo's queue pointer outside the queue is refused at load, naming it") {
        // It used to load and fail only inside the first step's queue update.
        apps::PretrainConfig c = test::tiny_config({"method.name=moco", "method.moco_hidden_dim=16",
                                                    "method.moco_dim=8", "method.moco_queue=16", "train.max_steps=1"});
        const std::string out = tmp_path("moco_ptr");
        const apps::PretrainResult first = test::run_tiny(c, out, false);
        REQUIRE(first.iterations == 1);
        c.max_steps = 2;
        for (const int64_t bad : {int64_t(16), int64_t(-4), int64_t(1) << 40, INT64_MAX, INT64_MIN}) {
            rewrite(first.last_checkpoint, "model.queue_ptr", "", from_vector(std::vector<int64_t>{bad}, Shape{}));
            const std::string e = error_of([&] { test::run_tiny(c, out, true); });
            CHECK_MESSAGE(contains(e, str("MoCo: queue_ptr ", bad, " is outside the queue of 16 rows")), e);
            CHECK(contains(e, first.last_checkpoint));
        }
        // A float where the integer pointer belongs is named, not converted (1e30 -> int64 was undefined behaviour,
        // found by fuzz.checkpoint).
        rewrite(first.last_checkpoint, "model.queue_ptr", "", from_vector(std::vector<float>{1e30f}, Shape{}));
        const std::string e = error_of([&] { test::run_tiny(c, out, true); });
        CHECK_MESSAGE(contains(e, "dtype mismatch for queue_ptr: got f32, expected i64"), e);
        CHECK(contains(e, first.last_checkpoint));
        rewrite(first.last_checkpoint, "model.queue_ptr", "", from_vector(std::vector<int64_t>{4}, Shape{}));
        CHECK(test::run_tiny(c, out, true).iterations == 2);  // an in-range pointer still resumes
        CHECK(std::system(("rm -rf '" + out + "'").c_str()) == 0);
    }

    TEST_CASE("ImageFolder: an index cache unlike what save_cache writes for the tree is rebuilt, never used") {
        const std::string root = tmp_path("cache_tree"), cache_dir = tmp_path("cache_dir");
        REQUIRE(std::system(("mkdir -p '" + root + "/cat' '" + root + "/dog/sub'").c_str()) == 0);
        for (const char* f : {"cache_tree/cat/a.jpg", "cache_tree/cat/b.png", "cache_tree/dog/c.JPEG",
                              "cache_tree/dog/sub/d.jpg"})
            write_tmp(f, "x");
        const data::IndexOptions opts{cache_dir, true};
        const data::Dataset built = data::Dataset::image_folder(root, opts);
        REQUIRE(built.size() == 4);
        const data::Dataset cached = data::Dataset::image_folder(root, opts);
        CHECK(cached.loaded_from_cache());  // a genuine cache is still used
        std::ifstream in(built.cache_path());
        const std::string genuine((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::string head = genuine.substr(0, genuine.find("classes ")), body = genuine.substr(head.size());
        std::vector<std::string> lines;  // magic, root, "dirs N", the root's stamp first, then the class folders'
        std::istringstream is(head);
        for (std::string l; std::getline(is, l);) lines.push_back(l);
        REQUIRE(lines.size() == 7);
        const std::string only_root_stamp = lines[0] + "\n" + lines[1] + "\ndirs 1\n" + lines[3] + "\n";
        auto edit = [&](const std::string& from, const std::string& to) {
            std::string b = body;
            REQUIRE(b.find(from) != std::string::npos);
            return head + b.replace(b.find(from), from.size(), to);
        };
        const std::string variants[] = {
            edit("1 dog/sub/d.jpg", "1 do/d.jpg"),  // fuzz_index_cache: a sample outside its class folder
            head + "classes 0\nsamples 0\n",         // no class, no sample: an empty data set
            edit("cat\ndog\n", "dog\ncat\n"),        // classes not sorted
            edit("0 cat/b.png", "0 cat/../../b.png"),
            head + "classes 2\ncat\ndog\nsamples 1\n0 cat/a.jpg\n",  // a class without samples
            genuine + "0 cat/extra.jpg\n",           // trailing lines
            only_root_stamp + body};                 // class folders without mtimes: changes would go unseen
        for (const std::string& v : variants) {
            std::ofstream(built.cache_path(), std::ios::binary | std::ios::trunc) << v;
            const data::Dataset again = data::Dataset::image_folder(root, opts);
            CHECK_MESSAGE(!again.loaded_from_cache(), v);
            CHECK(again.size() == 4);
            CHECK(again.path(3) == root + "/dog/sub/d.jpg");
        }
        CHECK(std::system(("rm -rf '" + root + "' '" + cache_dir + "'").c_str()) == 0);
    }
}
