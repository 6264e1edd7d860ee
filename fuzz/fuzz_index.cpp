// libFuzzer target: data/dataset.h Dataset::list_file on arbitrary bytes written to a temporary file. Every
// input either gives a non-empty data set whose paths and labels can all be read back, or throws IoError.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "data/dataset.h"
#include "engine/check.h"

static std::string temp_path() {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/sslight_fuzz_index_" + std::to_string(getpid()) + ".txt";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = temp_path();
    static const int cleanup = std::atexit([] { std::remove(path.c_str()); });
    (void)cleanup;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    try {
        const sslight::data::Dataset ds = sslight::data::Dataset::list_file(path);
        if (ds.size() <= 0 || ds.num_classes() <= 0) __builtin_trap();
        for (int64_t i = 0; i < ds.size(); ++i) {
            if (ds.path(i).empty()) __builtin_trap();
            if (ds.label(i) < 0 || ds.label(i) >= ds.num_classes()) __builtin_trap();
        }
    } catch (const sslight::IoError&) {
    }
    return 0;
}
