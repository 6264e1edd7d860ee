// Element types of tensors and the host-side bf16 storage type (bit-compatible with __nv_bfloat16).
// f64 exists for the CPU finite-difference gradient checks; the GPU path uses f32 and bf16 storage with
// f32 accumulation; i32/i64 hold labels and indices, u8 pixels.
#pragma once
#include <cstdint>
#include <cstring>

namespace sslight {

enum class DType : uint8_t { f32, f64, bf16, i32, i64, u8 };

inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "f32";
        case DType::f64: return "f64";
        case DType::bf16: return "bf16";
        case DType::i32: return "i32";
        case DType::i64: return "i64";
        case DType::u8: return "u8";
    }
    return "?";
}

inline size_t dtype_size(DType t) {
    switch (t) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::bf16: return 2;
        case DType::i32: return 4;
        case DType::i64: return 8;
        case DType::u8: return 1;
    }
    return 0;
}

inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

// bfloat16 storage: the upper 16 bits of an IEEE f32. Conversion rounds to nearest even; NaN stays NaN.
struct bf16 {
    uint16_t bits = 0;
    bf16() = default;
    explicit bf16(float f) : bits(from_float(f)) {}
    explicit operator float() const { return to_float(bits); }

    static uint16_t from_float(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
        u += 0x7fffu + ((u >> 16) & 1u);
        return static_cast<uint16_t>(u >> 16);
    }
    static float to_float(uint16_t b) {
        uint32_t u = static_cast<uint32_t>(b) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};
static_assert(sizeof(bf16) == 2, "bf16 must be 2 bytes");

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
    static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
    static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<bf16> {
    static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<int32_t> {
    static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
    static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<uint8_t> {
    static constexpr DType value = DType::u8;
};

}  // namespace sslight
