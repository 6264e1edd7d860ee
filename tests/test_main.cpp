// doctest main shared by every test executable. `--require-gpu` (added by ctest for gpu entries) makes
// the run exit 77 (ctest: skipped) with the reason printed when no CUDA device is usable; likewise
// `--require-torch` (parity entries) when SSLIGHT_PARITY_PYTHON cannot import torch.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/device.h"

int main(int argc, char** argv) {
    std::vector<char*> args;
    bool require_gpu = false, require_torch = false;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--require-gpu") == 0)
            require_gpu = true;
        else if (std::strcmp(argv[i], "--require-torch") == 0)
            require_torch = true;
        else
            args.push_back(argv[i]);
    }
    if (require_torch &&
        std::system(SSLIGHT_PARITY_PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        std::printf("SKIPPED: parity tests need PyTorch: `%s -c 'import torch, numpy'` failed "
                    "(install python3-torch with scripts/install_deps.sh --test)\n",
                    SSLIGHT_PARITY_PYTHON);
        return 77;
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
