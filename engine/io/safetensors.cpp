// safetensors reader (validated against the file length before any allocation) and atomic writer.
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "engine/autograd.h"
#include "engine/io/json.h"

namespace sslight::io {
namespace {

struct DTypeName {
    const char* name;
    DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F64", DType::f64}, {"F32", DType::f32}, {"BF16", DType::bf16},
                                 {"I64", DType::i64}, {"I32", DType::i32}, {"U8", DType::u8}};

DType parse_dtype(const std::string& s, const std::string& where) {
    for (const auto& d : kDTypes)
        if (s == d.name) return d.dtype;
    throw IoError(str(where, ": unsupported dtype '", s, "' (supported: F64, F32, BF16, I64, I32, U8)"));
}
const char* dtype_tag(DType t) {
    for (const auto& d : kDTypes)
        if (d.dtype == t) return d.name;
    return "?";
}

std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw IoError(str("cannot open '", path, "': ", std::strerror(errno)));
    f.seekg(0, std::ios::end);
    const std::streamoff len = f.tellg();
    if (len < 0) throw IoError(str("cannot determine the size of '", path, "'"));
    f.seekg(0);
    std::string bytes(static_cast<size_t>(len), '\0');
    if (len > 0 && !f.read(&bytes[0], len)) throw IoError(str("cannot read '", path, "'"));
    return bytes;
}

struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
};

Entry parse_entry(const std::string& path, const std::string& name, const json::Value& v, uint64_t data_len) {
    const std::string where = str(path, ": tensor '", name, "'");
    if (!v.is_object()) throw IoError(where + ": expected an object with dtype, shape and data_offsets");
    Entry e{name, DType::f32, {}, 0, 0};
    const json::Value* dt = v.find("dtype");
    const json::Value* sh = v.find("shape");
    const json::Value* off = v.find("data_offsets");
    if (!dt || !sh || !off) throw IoError(where + ": missing dtype, shape or data_offsets");
    e.dtype = parse_dtype(dt->as_string((where + " dtype").c_str()), where);
    uint64_t numel = 1;
    for (const json::Value& d : sh->as_array((where + " shape").c_str())) {
        const uint64_t n = d.as_uint((where + " shape").c_str());
        if (n > (uint64_t(1) << 40) || (n != 0 && numel > (uint64_t(1) << 62) / n))
            throw IoError(str(where, ": shape is too large"));
        numel *= n;
        e.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& o = off->as_array((where + " data_offsets").c_str());
    if (o.size() != 2) throw IoError(where + ": data_offsets must be [begin, end]");
    e.begin = o[0].as_uint((where + " data_offsets").c_str());
    e.end = o[1].as_uint((where + " data_offsets").c_str());
    if (e.begin > e.end || e.end > data_len)
        throw IoError(str(where, ": data_offsets [", e.begin, ", ", e.end, ") outside the ", data_len,
                          " data bytes of the file (truncated or corrupt file?)"));
    // numel * item is compared without being computed when it could wrap (2^62 F64 elements "need" 0 bytes),
    // so that a tensor is never larger than its slice of the file.
    const uint64_t item = dtype_size(e.dtype), bytes = e.end - e.begin;
    if (numel > bytes / item || bytes != numel * item) {
        const std::string expected = numel <= UINT64_MAX / item ? str(numel * item) : str(numel, " x ", item);
        throw IoError(str(where, ": ", bytes, " data bytes for shape ", shape_str(e.shape), " of ", dtype_tag(e.dtype),
                          " (expected ", expected, ")"));
    }
    return e;
}

}  // namespace

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
    return load_safetensors_from_memory(read_all(path), path, metadata);
}

TensorMap load_safetensors_from_memory(const std::string& bytes, const std::string& path, Metadata* metadata) {
    if (bytes.size() < 8) throw IoError(str(path, ": not a safetensors file (", bytes.size(), " bytes)"));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    if (n > kMaxSafetensorsHeader || n > bytes.size() - 8)
        throw IoError(str(path, ": header length ", n, " exceeds the file (", bytes.size(), " bytes) or the ",
                          kMaxSafetensorsHeader, "-byte limit: not a safetensors file or truncated"));
    const json::Value header = json::parse(bytes.substr(8, n), path + " header");
    const uint64_t data_len = bytes.size() - 8 - n;
    const char* data = bytes.data() + 8 + n;

    std::vector<Entry> entries;
    for (const auto& [name, v] : header.as_object((path + " header").c_str())) {
        if (name == "__metadata__") {
            if (metadata)
                for (const auto& [k, s] : v.as_object("__metadata__")) (*metadata)[k] = s.as_string("__metadata__ value");
            continue;
        }
        entries.push_back(parse_entry(path, name, v, data_len));
    }
    std::vector<const Entry*> order;
    for (const Entry& e : entries) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < order.size(); ++i)
        if (order[i]->begin < order[i - 1]->end)
            throw IoError(str(path, ": tensors '", order[i - 1]->name, "' and '", order[i]->name, "' overlap"));

    TensorMap out;
    for (const Entry& e : entries) {
        if (out.count(e.name)) throw IoError(str(path, ": duplicate tensor name '", e.name, "'"));
        Tensor t = empty(e.shape, e.dtype);
        if (e.end > e.begin) std::memcpy(t.raw_data(), data + e.begin, e.end - e.begin);
        out[e.name] = t;
    }
    return out;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
    const std::string tmp = str(path, ".tmp.", getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) throw IoError(str("cannot create '", tmp, "': ", std::strerror(errno)));
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            const int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw IoError(str("cannot write '", tmp, "': ", std::strerror(err)));
        }
        done += static_cast<size_t>(w);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw IoError(str("cannot flush '", tmp, "': ", std::strerror(err)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw IoError(str("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err)));
    }
    const size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
    NoGradGuard ng;
    json::Value header = json::Value::make_object();
    if (!metadata.empty()) {
        json::Value m = json::Value::make_object();
        for (const auto& [k, v] : metadata) m.set(k, json::Value::make_string(v));
        header.set("__metadata__", m);
    }
    uint64_t offset = 0;
    std::vector<Tensor> cpu;
    for (const auto& [name, t] : tensors) {
        SSL_CHECK_T(IoError, t.defined(), "save_safetensors: tensor '", name, "' is undefined");
        Tensor c = t.detach().to(Device::cpu());
        json::Value e = json::Value::make_object();
        e.set("dtype", json::Value::make_string(dtype_tag(c.dtype())));
        json::Value shape = json::Value::make_array();
        for (int64_t d : c.shape()) shape.push(json::Value::make_number(std::to_string(d)));
        e.set("shape", shape);
        json::Value off = json::Value::make_array();
        off.push(json::Value::make_number(std::to_string(offset)));
        offset += c.nbytes();
        off.push(json::Value::make_number(std::to_string(offset)));
        e.set("data_offsets", off);
        header.set(name, e);
        cpu.push_back(c);
    }
    std::string h = header.dump();
    while (h.size() % 8) h += ' ';  // the data section starts 8-byte aligned
    std::string bytes(8, '\0');
    const uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += h;
    for (const Tensor& c : cpu) bytes.append(static_cast<const char*>(c.raw_data()), c.nbytes());
    write_file_atomic(path, bytes);
}

}  // namespace sslight::io
