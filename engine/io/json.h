// A small JSON reader and writer for file headers (safetensors, checkpoints) and metrics logs. The
// reader is strict (RFC 8259, no comments or trailing commas), bounded (depth <= 64, input size as
// given) and reports the byte offset of the first error; numbers keep their text so 64-bit integers
// (tensor offsets) are exact.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sslight::json {

class Value {
public:
    enum class Type { null, boolean, number, string, array, object };

    Value() = default;
    static Value make_bool(bool b);
    static Value make_number(const std::string& text);
    static Value make_string(std::string s);
    static Value make_array();
    static Value make_object();

    Type type() const { return type_; }
    bool is_object() const { return type_ == Type::object; }
    bool is_array() const { return type_ == Type::array; }
    bool is_string() const { return type_ == Type::string; }
    bool is_number() const { return type_ == Type::number; }

    // Typed access; each throws IoError naming `what` and the actual type when it does not fit.
    const std::string& as_string(const char* what) const;
    double as_double(const char* what) const;
    int64_t as_int(const char* what) const;    // exact integer in int64 range
    uint64_t as_uint(const char* what) const;  // exact non-negative integer
    bool as_bool(const char* what) const;
    const std::vector<Value>& as_array(const char* what) const;
    const std::vector<std::pair<std::string, Value>>& as_object(const char* what) const;

    const Value* find(const std::string& key) const;  // objects only; nullptr when absent
    void set(const std::string& key, Value v);          // objects: appends (keeps insertion order)
    void push(Value v);                                 // arrays

    std::string dump() const;  // compact, keys in insertion order

private:
    Type type_ = Type::null;
    bool b_ = false;
    std::string s_;  // string value or number text
    std::vector<Value> arr_;
    std::vector<std::pair<std::string, Value>> obj_;
};

// Parses `text` (exactly one value, optional surrounding whitespace). Throws IoError with the offset.
Value parse(const std::string& text, const std::string& source_name = "JSON");

std::string quote(const std::string& s);  // a JSON string literal with escapes

}  // namespace sslight::json
