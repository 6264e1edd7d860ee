// A TOML subset parser for the configs (TOML 1.0 syntax for what it accepts): [tables] and [dotted.tables],
// bare / quoted / dotted keys, basic and literal strings, integers (sign, '_' separators), floats (fraction,
// exponent, inf, nan), booleans, arrays of scalars (over several lines, trailing comma allowed) and '#'
// comments. Everything else (inline tables, arrays of tables, dates, multi-line strings, control characters in
// strings) is rejected. Errors throw ConfigError "file:line:column: what was expected". Input is capped at
// kMaxTomlBytes and parsed in linear time without recursion deeper than one array. No tensors, no gradients.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sslight::apps::toml {

constexpr size_t kMaxTomlBytes = size_t(1) << 20;  // a config file (the shipped ones are ~1 KB)

struct Value {
    enum class Type { string, integer, floating, boolean, array };
    Type type = Type::string;
    std::string str;
    int64_t integer = 0;
    double floating = 0;
    bool boolean = false;
    std::vector<Value> array;
    int line = 0, column = 0;  // where the value starts (1-based)
};

const char* type_name(Value::Type t);  // "string", "integer", "float", "boolean", "array"

// The document as (full dotted key, value) in file order. A key defined twice is an error.
struct Document {
    std::string source;
    std::vector<std::pair<std::string, Value>> entries;
    const Value* find(const std::string& key) const;
};

Document parse(const std::string& text, const std::string& source_name);
Document parse_file(const std::string& path);
// The bytes of a config file, refusing one over kMaxTomlBytes before reading it.
std::string read_file(const std::string& path);
// One value on its own (the right-hand side of `--set key=value`); `source_name` prefixes errors.
Value parse_value(const std::string& text, const std::string& source_name);

}  // namespace sslight::apps::toml
