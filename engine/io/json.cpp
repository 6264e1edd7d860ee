// Strict recursive-descent JSON parser with a depth limit, and the compact writer.
#include "engine/io/json.h"

#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstdlib>

#include "engine/check.h"

namespace sslight::json {
namespace {

const char* type_name(Value::Type t) {
    switch (t) {
        case Value::Type::null: return "null";
        case Value::Type::boolean: return "boolean";
        case Value::Type::number: return "number";
        case Value::Type::string: return "string";
        case Value::Type::array: return "array";
        case Value::Type::object: return "object";
    }
    return "?";
}

class Parser {
public:
    Parser(const std::string& text, const std::string& name) : t_(text), name_(name) {}

    Value parse_document() {
        ws();
        Value v = value(0);
        ws();
        if (i_ != t_.size()) fail("unexpected trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw IoError(str(name_, ": invalid JSON at byte ", i_, ": ", what));
    }
    void ws() {
        while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
    }
    bool eat(char c) {
        if (i_ < t_.size() && t_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    void expect_word(const char* w) {
        for (const char* p = w; *p; ++p)
            if (!eat(*p)) fail(str("expected '", w, "'"));
    }

    Value value(int depth) {
        if (depth > 64) fail("nesting deeper than 64 levels");
        if (i_ >= t_.size()) fail("unexpected end of input");
        const char c = t_[i_];
        if (c == '{') return object(depth);
        if (c == '[') return array(depth);
        if (c == '"') return Value::make_string(string());
        if (c == 't') return expect_word("true"), Value::make_bool(true);
        if (c == 'f') return expect_word("false"), Value::make_bool(false);
        if (c == 'n') return expect_word("null"), Value();
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        fail(str("unexpected character '", c, "'"));
    }

    Value object(int depth) {
        ++i_;
        Value v = Value::make_object();
        ws();
        if (eat('}')) return v;
        for (;;) {
            ws();
            if (i_ >= t_.size() || t_[i_] != '"') fail("expected a string key");
            std::string key = string();
            ws();
            if (!eat(':')) fail("expected ':'");
            ws();
            v.set(key, value(depth + 1));
            ws();
            if (eat('}')) return v;
            if (!eat(',')) fail("expected ',' or '}'");
        }
    }

    Value array(int depth) {
        ++i_;
        Value v = Value::make_array();
        ws();
        if (eat(']')) return v;
        for (;;) {
            ws();
            v.push(value(depth + 1));
            ws();
            if (eat(']')) return v;
            if (!eat(',')) fail("expected ',' or ']'");
        }
    }

    unsigned hex4() {
        unsigned u = 0;
        for (int k = 0; k < 4; ++k) {
            if (i_ >= t_.size()) fail("truncated \\u escape");
            const char h = t_[i_++];
            u <<= 4;
            if (h >= '0' && h <= '9') u |= h - '0';
            else if (h >= 'a' && h <= 'f') u |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') u |= h - 'A' + 10;
            else fail("bad hex digit in \\u escape");
        }
        return u;
    }

    static void utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }

    std::string string() {
        ++i_;  // opening quote
        std::string out;
        for (;;) {
            if (i_ >= t_.size()) fail("unterminated string");
            const char c = t_[i_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= t_.size()) fail("unterminated escape");
            const char e = t_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xd800 && cp < 0xdc00) {
                        if (!eat('\\') || !eat('u')) fail("unpaired surrogate");
                        const unsigned lo = hex4();
                        if (lo < 0xdc00 || lo >= 0xe000) fail("bad low surrogate");
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    } else if (cp >= 0xdc00 && cp < 0xe000) {
                        fail("unpaired surrogate");
                    }
                    utf8(out, cp);
                    break;
                }
                default: fail(str("bad escape '\\", e, "'"));
            }
        }
    }

    Value number() {
        const size_t start = i_;
        eat('-');
        if (eat('0')) {
        } else if (i_ < t_.size() && t_[i_] >= '1' && t_[i_] <= '9') {
            while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
        } else {
            fail("bad number");
        }
        if (eat('.')) {
            if (i_ >= t_.size() || t_[i_] < '0' || t_[i_] > '9') fail("digit expected after '.'");
            while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
        }
        if (eat('e') || eat('E')) {
            if (!eat('+')) eat('-');
            if (i_ >= t_.size() || t_[i_] < '0' || t_[i_] > '9') fail("digit expected in exponent");
            while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
        }
        return Value::make_number(t_.substr(start, i_ - start));
    }

    const std::string& t_;
    const std::string& name_;
    size_t i_ = 0;
};

[[noreturn]] void wrong_type(const char* what, Value::Type want, Value::Type got) {
    throw IoError(str(what, ": expected a JSON ", type_name(want), ", got ", type_name(got)));
}

}  // namespace

Value Value::make_bool(bool b) {
    Value v;
    v.type_ = Type::boolean;
    v.b_ = b;
    return v;
}
Value Value::make_number(const std::string& text) {
    Value v;
    v.type_ = Type::number;
    v.s_ = text;
    return v;
}
Value Value::make_string(std::string s) {
    Value v;
    v.type_ = Type::string;
    v.s_ = std::move(s);
    return v;
}
Value Value::make_array() {
    Value v;
    v.type_ = Type::array;
    return v;
}
Value Value::make_object() {
    Value v;
    v.type_ = Type::object;
    return v;
}

const std::string& Value::as_string(const char* what) const {
    if (type_ != Type::string) wrong_type(what, Type::string, type_);
    return s_;
}
double Value::as_double(const char* what) const {
    if (type_ != Type::number) wrong_type(what, Type::number, type_);
    return std::strtod(s_.c_str(), nullptr);
}
int64_t Value::as_int(const char* what) const {
    if (type_ != Type::number) wrong_type(what, Type::number, type_);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(s_.c_str(), &end, 10);
    if (errno == ERANGE || *end != '\0') throw IoError(str(what, ": expected an integer in int64 range, got ", s_));
    return v;
}
uint64_t Value::as_uint(const char* what) const {
    if (type_ != Type::number) wrong_type(what, Type::number, type_);
    errno = 0;
    char* end = nullptr;
    if (!s_.empty() && s_[0] == '-') throw IoError(str(what, ": expected a non-negative integer, got ", s_));
    const unsigned long long v = std::strtoull(s_.c_str(), &end, 10);
    if (errno == ERANGE || *end != '\0') throw IoError(str(what, ": expected a non-negative integer, got ", s_));
    return v;
}
bool Value::as_bool(const char* what) const {
    if (type_ != Type::boolean) wrong_type(what, Type::boolean, type_);
    return b_;
}
const std::vector<Value>& Value::as_array(const char* what) const {
    if (type_ != Type::array) wrong_type(what, Type::array, type_);
    return arr_;
}
const std::vector<std::pair<std::string, Value>>& Value::as_object(const char* what) const {
    if (type_ != Type::object) wrong_type(what, Type::object, type_);
    return obj_;
}

const Value* Value::find(const std::string& key) const {
    for (const auto& [k, v] : obj_)
        if (k == key) return &v;
    return nullptr;
}
void Value::set(const std::string& key, Value v) { obj_.emplace_back(key, std::move(v)); }
void Value::push(Value v) { arr_.push_back(std::move(v)); }

std::string quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

std::string Value::dump() const {
    switch (type_) {
        case Type::null: return "null";
        case Type::boolean: return b_ ? "true" : "false";
        case Type::number: return s_;
        case Type::string: return quote(s_);
        case Type::array: {
            std::string out = "[";
            for (size_t i = 0; i < arr_.size(); ++i) out += (i ? "," : "") + arr_[i].dump();
            return out + "]";
        }
        case Type::object: {
            std::string out = "{";
            for (size_t i = 0; i < obj_.size(); ++i) out += (i ? "," : "") + quote(obj_[i].first) + ":" + obj_[i].second.dump();
            return out + "}";
        }
    }
    return "null";
}

Value parse(const std::string& text, const std::string& source_name) { return Parser(text, source_name).parse_document(); }

}  // namespace sslight::json
