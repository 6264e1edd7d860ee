// safetensors files: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name
// to {dtype, shape, data_offsets [begin, end)} (plus an optional "__metadata__" string map), then the raw
// little-endian data. Reading validates everything against the file's real length before allocating
// (header size cap, dtype, shape overflow, offsets in range and matching numel·itemsize, no overlaps) and
// names the file and the tensor in every error. Writing is atomic (temporary file, fsync, rename).
#pragma once
#include <map>
#include <string>

#include "engine/tensor.h"

namespace sslight::io {

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;  // 100 MiB, as the reference implementation

// Loads every tensor onto the CPU (F64, F32, BF16, I64, I32, U8). Throws IoError.
TensorMap load_safetensors(const std::string& path, Metadata* metadata = nullptr);
// The same from the file's bytes already in memory; `source_name` stands for the path in error messages.
TensorMap load_safetensors_from_memory(const std::string& bytes, const std::string& source_name,
                                       Metadata* metadata = nullptr);

// Writes tensors (moved to the CPU as needed) in name order. Throws IoError; an existing file at `path`
// is replaced only once the new one is complete on disk.
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Writes `bytes` to `path` atomically: `path`.tmp.<pid>, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace sslight::io
