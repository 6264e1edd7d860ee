// Errors: typed exceptions a test can catch, the always-on SSL_CHECK family used at every API boundary,
// and the generator for checked library calls (CUDA, cuBLAS, cuDNN, NCCL, MPI) that name the call, the
// file and the line. Destructors never throw: they use SSL_WARN_IF.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace sslight {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct ShapeError : Error {
    using Error::Error;
};
struct DTypeError : Error {
    using Error::Error;
};
struct DeviceError : Error {
    using Error::Error;
};
struct AutogradError : Error {
    using Error::Error;
};
struct IoError : Error {
    using Error::Error;
};
struct ConfigError : Error {
    using Error::Error;
};
struct LibraryError : Error {  // a failed CUDA/cuBLAS/cuDNN/NCCL/MPI call
    using Error::Error;
};

namespace detail {
inline void str_into(std::ostringstream&) {}
template <class T, class... Rest>
void str_into(std::ostringstream& os, const T& v, const Rest&... rest) {
    os << v;
    str_into(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<<.
template <class... Args>
std::string str(const Args&... args) {
    std::ostringstream os;
    detail::str_into(os, args...);
    return os.str();
}

namespace detail {
template <class E>
[[noreturn]] void fail(const char* file, int line, const std::string& msg) {
    throw E(str(msg, " [", file, ":", line, "]"));
}
}  // namespace detail

}  // namespace sslight

// Always on, release builds included. The message is built only on failure.
#define SSL_CHECK_T(ErrType, cond, ...) \
    do {                                \
        if (!(cond)) ::sslight::detail::fail<ErrType>(__FILE__, __LINE__, ::sslight::str(__VA_ARGS__)); \
    } while (0)
#define SSL_CHECK(cond, ...) SSL_CHECK_T(::sslight::Error, cond, __VA_ARGS__)
#define SSL_CHECK_SHAPE(cond, ...) SSL_CHECK_T(::sslight::ShapeError, cond, __VA_ARGS__)
#define SSL_CHECK_DTYPE(cond, ...) SSL_CHECK_T(::sslight::DTypeError, cond, __VA_ARGS__)
#define SSL_CHECK_DEVICE(cond, ...) SSL_CHECK_T(::sslight::DeviceError, cond, __VA_ARGS__)
#define SSL_FAIL(...) ::sslight::detail::fail<::sslight::Error>(__FILE__, __LINE__, ::sslight::str(__VA_ARGS__))

// Generator for checked library calls: OK_EXPR tells success, ERRSTR_EXPR turns the status into text.
#define SSL_LIB_CHECK_GEN(lib, call, status_type, ok_expr, errstr_expr)                                     \
    do {                                                                                                  \
        status_type ssl_status_ = (call);                                                                 \
        if (!(ok_expr)) {                                                                                 \
            ::sslight::detail::fail<::sslight::LibraryError>(                                             \
                __FILE__, __LINE__, ::sslight::str(lib, " call `", #call, "` failed: ", errstr_expr));   \
        }                                                                                                 \
    } while (0)
