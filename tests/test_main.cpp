// doctest main shared by every test executable. `--require-gpu` (added by ctest for gpu entries) makes
// the run exit 77 (ctest: skipped) with the reason printed when no CUDA device is usable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/device.h"

int main(int argc, char** argv) {
    std::vector<char*> args;
    bool require_gpu = false;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--require-gpu") == 0)
            require_gpu = true;
        else
            args.push_back(argv[i]);
    }
    if (require_gpu && sslight::runtime::cuda_device_count() == 0) {
        std::printf("SKIPPED: gpu tests need a usable CUDA device: %s\n",
                    sslight::runtime::cuda_unavailable_reason().c_str());
        return 77;
    }
    doctest::Context ctx;
    ctx.applyCommandLine(static_cast<int>(args.size()), args.data());
    return ctx.run();
}
