// The TOML subset parser (apps/toml.h): a single pass over the text with a cursor that tracks line and
// column, so every error names file:line:column.
#include "apps/toml.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <unordered_set>

#include "engine/check.h"

namespace sslight::apps::toml {
namespace {

// A character for an error message: printable ones as they are, others as \xNN.
std::string shown(char c) {
    if (std::isprint(static_cast<unsigned char>(c))) return std::string(1, c);
    char buf[8];
    std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
    return buf;
}

class Parser {
public:
    Parser(const std::string& text, std::string source) : s_(text), src_(std::move(source)) {}

    [[noreturn]] void fail(const std::string& what, int line = 0, int col = 0) const {
        throw ConfigError(str(src_, ":", line ? line : line_, ":", col ? col : col_, ": ", what));
    }
    bool eof() const { return i_ >= s_.size(); }
    char peek() const { return eof() ? '\0' : s_[i_]; }
    char get() {
        char c = s_[i_++];
        if (c == '\n')
            ++line_, col_ = 1;
        else
            ++col_;
        return c;
    }
    void skip_blank() {  // spaces and tabs
        while (!eof() && (peek() == ' ' || peek() == '\t')) get();
    }
    void skip_comment() {
        if (peek() == '#')
            while (!eof() && peek() != '\n') get();
    }
    void skip_ws_lines() {  // whitespace, newlines and comments (inside arrays)
        for (;;) {
            skip_blank();
            skip_comment();
            if (peek() == '\n' || peek() == '\r')
                get();
            else
                return;
        }
    }
    void end_of_line() {
        skip_blank();
        skip_comment();
        if (peek() == '\r') get();
        if (!eof() && peek() != '\n') fail(str("expected the end of the line, found '", shown(peek()), "'"));
        if (!eof()) get();
    }

    std::string key_part() {
        if (peek() == '"' || peek() == '\'') return parse_string().str;
        std::string k;
        while (!eof() && (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '_' || peek() == '-'))
            k += get();
        if (k.empty())
            fail(str("expected a key, found '", eof() ? std::string("end of file") : shown(peek()), "'"));
        return k;
    }
    std::string dotted_key() {
        std::string k = key_part();
        skip_blank();
        while (peek() == '.') {
            get();
            skip_blank();
            k += "." + key_part();
            skip_blank();
        }
        return k;
    }

    Value parse_string() {
        Value v;
        v.type = Value::Type::string, v.line = line_, v.column = col_;
        const char q = get();
        if (i_ + 1 < s_.size() && s_[i_] == q && s_[i_ + 1] == q) fail("multi-line strings are not supported");
        for (;;) {
            if (eof() || peek() == '\n') fail("unterminated string", v.line, v.column);
            char c = get();
            if (c == q) return v;
            // TOML 1.0: control characters other than tab must be escaped (and have no escape here but \n \t \r).
            if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
                fail(str("control character ", shown(c), " in a string"));
            if (c == '\\' && q == '"') {
                if (eof()) fail("unterminated string", v.line, v.column);
                char e = get();
                switch (e) {
                    case 'n': v.str += '\n'; break;
                    case 't': v.str += '\t'; break;
                    case 'r': v.str += '\r'; break;
                    case '"': v.str += '"'; break;
                    case '\\': v.str += '\\'; break;
                    default: fail(str("unsupported escape '\\", shown(e), "'"));
                }
            } else {
                v.str += c;
            }
        }
    }

    Value parse_number_or_bool() {
        Value v;
        v.line = line_, v.column = col_;
        std::string tok;
        while (!eof() && !std::isspace(static_cast<unsigned char>(peek())) && peek() != ',' && peek() != ']' &&
               peek() != '#')
            tok += get();
        if (tok == "true" || tok == "false") {
            v.type = Value::Type::boolean, v.boolean = tok == "true";
            return v;
        }
        std::string clean;
        for (size_t k = 0; k < tok.size(); ++k) {
            if (tok[k] != '_') {
                clean += tok[k];
                continue;
            }
            if (k == 0 || k + 1 == tok.size() || !std::isdigit(static_cast<unsigned char>(tok[k - 1])) ||
                !std::isdigit(static_cast<unsigned char>(tok[k + 1])))
                fail(str("bad '_' in number '", tok, "'"), v.line, v.column);
        }
        const std::string body = (!clean.empty() && (clean[0] == '+' || clean[0] == '-')) ? clean.substr(1) : clean;
        if (body == "inf" || body == "nan") {
            v.type = Value::Type::floating;
            v.floating = body == "inf" ? HUGE_VAL : NAN;
            if (clean[0] == '-') v.floating = -v.floating;
            return v;
        }
        const bool is_float = clean.find_first_of(".eE") != std::string::npos;
        const bool ok_chars = !body.empty() && std::isdigit(static_cast<unsigned char>(body[0])) &&
                              body.find_first_not_of("0123456789.eE+-") == std::string::npos;
        char* end = nullptr;
        errno = 0;
        if (ok_chars && is_float) {
            v.type = Value::Type::floating, v.floating = std::strtod(clean.c_str(), &end);
            if (*end == '\0' && clean.back() != '.' && body.find(".e") == std::string::npos &&
                body.find(".E") == std::string::npos && body[0] != '.')
                return v;
        } else if (ok_chars) {
            v.type = Value::Type::integer, v.integer = std::strtoll(clean.c_str(), &end, 10);
            if (*end == '\0' && errno != ERANGE && !(body.size() > 1 && body[0] == '0')) return v;
        }
        if (tok.empty())
            fail(str("expected a value, found '", eof() ? std::string("end of file") : shown(peek()), "'"));
        fail(str("expected a string, number, boolean or array, found '", tok, "'"), v.line, v.column);
    }

    Value parse_value() {
        skip_blank();
        if (peek() == '"' || peek() == '\'') return parse_string();
        if (peek() == '{') fail("inline tables are not supported");
        if (peek() == '[') {
            Value v;
            v.type = Value::Type::array, v.line = line_, v.column = col_;
            get();
            for (;;) {
                skip_ws_lines();
                if (eof()) fail("unterminated array", v.line, v.column);
                if (peek() == ']') {
                    get();
                    return v;
                }
                // Refused before recursing: "[[[[..." must not nest the parser as deep as the file is long.
                if (peek() == '[') fail("arrays of arrays are not supported");
                v.array.push_back(parse_value());
                skip_ws_lines();
                if (eof()) fail("unterminated array", v.line, v.column);
                if (peek() == ',')
                    get();
                else if (peek() != ']')
                    fail("expected ',' or ']' in the array");
            }
        }
        return parse_number_or_bool();
    }

    Document run() {
        if (s_.size() > kMaxTomlBytes)
            fail(str("the config is ", s_.size(), " bytes, more than the ", kMaxTomlBytes, " accepted"), 1, 1);
        Document doc;
        doc.source = src_;
        std::string table;
        std::unordered_set<std::string> seen;  // Document::find is linear: n keys must not cost n^2
        while (!eof()) {
            skip_ws_lines();
            if (eof()) break;
            const int line = line_, col = col_;
            if (peek() == '[') {
                get();
                if (peek() == '[') fail("arrays of tables are not supported");
                skip_blank();
                table = dotted_key();
                if (peek() != ']') fail("expected ']' after the table name");
                get();
                end_of_line();
                continue;
            }
            std::string key = dotted_key();
            if (!table.empty()) key = table + "." + key;
            if (peek() != '=') fail(str("expected '=' after the key '", key, "'"));
            get();
            Value v = parse_value();
            end_of_line();
            if (!seen.insert(key).second) fail(str("the key '", key, "' is defined twice"), line, col);
            doc.entries.emplace_back(key, std::move(v));
        }
        return doc;
    }

private:
    const std::string& s_;
    std::string src_;
    size_t i_ = 0;
    int line_ = 1, col_ = 1;
};

}  // namespace

const char* type_name(Value::Type t) {
    switch (t) {
        case Value::Type::string: return "string";
        case Value::Type::integer: return "integer";
        case Value::Type::floating: return "float";
        case Value::Type::boolean: return "boolean";
        case Value::Type::array: return "array";
    }
    return "?";
}

const Value* Document::find(const std::string& key) const {
    for (const auto& e : entries)
        if (e.first == key) return &e.second;
    return nullptr;
}

Document parse(const std::string& text, const std::string& source_name) {
    return Parser(text, source_name).run();
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ConfigError(str(path, ": cannot open the config file"));
    std::string text(kMaxTomlBytes + 1, '\0');
    f.read(&text[0], static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(f.gcount()));
    if (text.size() > kMaxTomlBytes)
        throw ConfigError(str(path, ": more than ", kMaxTomlBytes, " bytes, not a config file?"));
    if (f.bad()) throw ConfigError(str(path, ": error while reading the config file"));
    return text;
}

Document parse_file(const std::string& path) {
    return parse(read_file(path), path);
}

Value parse_value(const std::string& text, const std::string& source_name) {
    Parser p(text, source_name);
    Value v = p.parse_value();
    p.end_of_line();
    if (!p.eof()) p.fail("expected one value");
    return v;
}

}  // namespace sslight::apps::toml
