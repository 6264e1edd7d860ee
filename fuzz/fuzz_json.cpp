// libFuzzer target: engine/io/json.h parse of arbitrary bytes. Every input either parses or throws IoError;
// a parsed value dumps to text that parses back to the same dump (writer and reader agree), and the typed
// accessors never crash on what the parser produced.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/check.h"
#include "engine/io/json.h"

using sslight::json::Value;

static void touch(const Value& v, int depth) {
    try {
        switch (v.type()) {
            case Value::Type::number:
                (void)v.as_double("n");
                (void)v.as_int("n");
                (void)v.as_uint("n");
                break;
            case Value::Type::array:
                for (const Value& e : v.as_array("a")) touch(e, depth + 1);
                break;
            case Value::Type::object:
                for (const auto& kv : v.as_object("o")) touch(kv.second, depth + 1);
                (void)v.find("dtype");
                break;
            default: break;
        }
    } catch (const sslight::IoError&) {
    }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    Value v;
    try {
        v = sslight::json::parse(text, "fuzz");
    } catch (const sslight::IoError&) {
        return 0;
    }
    touch(v, 0);
    const std::string once = v.dump();
    const std::string twice = sslight::json::parse(once, "fuzz dump").dump();
    if (once != twice) __builtin_trap();
    return 0;
}
