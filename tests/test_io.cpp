// JSON and safetensors: round trips, PyTorch-written files, and every corrupt-file path failing with an
// IoError that names the file and the problem (never a crash or an unbounded allocation).
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>

#include <unistd.h>

#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;

namespace {
std::string tmp_path(const char* name) { return std::string("/tmp/sslight_test_io_") + std::to_string(::getpid()) + name; }

void write_raw(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string with_header(const std::string& header, const std::string& data, uint64_t declared = 0) {
    const uint64_t n = declared ? declared : header.size();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + data;
}

void expect_io_error(const std::string& bytes, const std::string& needle) {
    const std::string p = tmp_path("_bad.safetensors");
    write_raw(p, bytes);
    try {
        io::load_safetensors(p);
        FAIL("expected IoError containing: ", needle);
    } catch (const IoError& e) {
        const std::string msg = e.what();
        CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
        CHECK_MESSAGE(msg.find(p) != std::string::npos, msg);
    }
    std::remove(p.c_str());
}
}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("json parses, keeps integers exact, rejects malformed input with an offset") {
        json::Value v = json::parse(R"({"a": [1, 2.5, -3e2], "b": {"c": "x\"y\u00e9"}, "big": 18446744073709551615, "t": true, "n": null})");
        CHECK(v.find("a")->as_array("a")[1].as_double("a1") == 2.5);
        CHECK(v.find("big")->as_uint("big") == 18446744073709551615ull);
        CHECK(v.find("b")->find("c")->as_string("c") == "x\"y\xc3\xa9");
        CHECK(json::parse(v.dump()).dump() == v.dump());
        CHECK_THROWS_AS(v.find("a")->as_string("a"), IoError);
        CHECK_THROWS_AS(json::parse("{\"a\": 1,}"), IoError);
        CHECK_THROWS_AS(json::parse("[1 2]"), IoError);
        CHECK_THROWS_AS(json::parse("\"abc"), IoError);
        CHECK_THROWS_AS(json::parse(std::string(100, '[') + std::string(100, ']')), IoError);
        CHECK_THROWS_AS(json::parse("01"), IoError);
        CHECK_THROWS_AS(json::parse("{\"x\": 1} extra"), IoError);
        try {
            json::parse("{\"a\": tru}");
        } catch (const IoError& e) {
            CHECK(std::string(e.what()).find("byte") != std::string::npos);
        }
    }

    TEST_CASE("safetensors round trip of every dtype with metadata") {
        io::TensorMap m;
        m["a.f32"] = random_tensor({3, 4}, 1);
        m["b.f64"] = random_tensor({5}, 2, DType::f64);
        m["c.bf16"] = random_tensor({2, 2}, 3).to(DType::bf16);
        m["d.i64"] = from_vector(std::vector<int64_t>{1, -2, 3}, {3});
        m["e.u8"] = from_vector(std::vector<uint8_t>{0, 255}, {2});
        m["f.scalar"] = scalar_tensor(7.0);
        m["g.empty"] = zeros({0, 3});
        const std::string p = tmp_path(".safetensors");
        io::save_safetensors(p, m, {{"format", "pt"}});
        io::Metadata meta;
        io::TensorMap r = io::load_safetensors(p, &meta);
        CHECK(meta["format"] == "pt");
        REQUIRE(r.size() == m.size());
        for (auto& [k, v] : m) {
            CHECK(r[k].shape() == v.shape());
            CHECK(r[k].dtype() == v.dtype());
            CHECK(r[k].to_vector<double>() == v.to_vector<double>());
        }
        std::remove(p.c_str());
    }

    TEST_CASE("corrupt safetensors files fail with a clear IoError") {
        expect_io_error("", "not a safetensors file");
        expect_io_error(with_header("{}", "", 1ull << 40), "header length");
        expect_io_error(with_header("{\"x\": ", ""), "invalid JSON");
        expect_io_error(with_header("[]", ""), "expected a JSON object");
        const std::string ok_hdr = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
        expect_io_error(with_header(ok_hdr, std::string(8, '\0')), "outside the 8 data bytes");
        expect_io_error(with_header(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", std::string(16, '\0')),
                        "expected 24");
        expect_io_error(with_header(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')),
                        "unsupported dtype 'F16'");
        expect_io_error(with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                                    std::string(4, '\0')),
                        "too large");
        expect_io_error(with_header(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                                    std::string(6, '\0')),
                        "overlap");
        expect_io_error(with_header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-1,3]}})", std::string(4, '\0')),
                        "non-negative");
        CHECK_THROWS_AS(io::load_safetensors("/nonexistent/x.safetensors"), IoError);
    }

    TEST_CASE("atomic write replaces a file only when complete") {
        const std::string p = tmp_path(".txt");
        io::write_file_atomic(p, "first");
        io::write_file_atomic(p, "second");
        std::ifstream f(p);
        std::string s;
        f >> s;
        CHECK(s == "second");
        CHECK_THROWS_AS(io::write_file_atomic("/nonexistent-dir/x", "y"), IoError);
        std::remove(p.c_str());
    }
}
