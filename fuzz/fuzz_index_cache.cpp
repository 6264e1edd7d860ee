// libFuzzer target: the ImageFolder index cache reader (data/dataset.h Dataset::image_folder with a cache folder)
// on arbitrary cache files, over a small fixed tree in /dev/shm. Odd first byte: the rest follows the genuine
// header (magic, root and the folders' mtimes, which no input can guess), so the classes and samples sections are
// what gets fuzzed; even: the rest is the whole file. A cache never makes image_folder fail: it is either used
// (and then is as well-formed as a built index) or ignored and rebuilt to the real index.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/check.h"

using sslight::data::Dataset;

namespace {

struct Tree {
    std::string base, root, cache_dir, cache_file, header;
    int64_t size = 0;
};

void touch(const std::string& path) {
    std::ofstream(path) << "x";
}

// root/{cat,dog}/..., built once per process; the genuine cache's lines up to the classes section.
const Tree& tree() {
    static const Tree t = [] {
        Tree t;
        const char* shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        t.base = std::string(shm) + "/sslight_fuzz_index_cache_" + std::to_string(getpid());
        t.root = t.base + "/root", t.cache_dir = t.base + "/cache";
        for (const std::string& d : {t.base, t.root, t.root + "/cat", t.root + "/dog", t.root + "/dog/sub"})
            mkdir(d.c_str(), 0755);
        for (const char* f : {"/cat/a.jpg", "/cat/b.png", "/dog/c.JPEG", "/dog/sub/d.jpg", "/dog/notes.txt"})
            touch(t.root + f);
        const Dataset ds = Dataset::image_folder(t.root, {t.cache_dir, true});
        t.cache_file = ds.cache_path(), t.size = ds.size();
        std::ifstream in(t.cache_file);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        t.header = text.substr(0, text.find("classes "));
        return t;
    }();
    static const int cleanup = std::atexit([] {
        std::error_code ec;
        std::filesystem::remove_all(tree().base, ec);
    });
    (void)cleanup;
    return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const Tree& t = tree();
    if (size == 0) return 0;
    {
        std::ofstream out(t.cache_file, std::ios::binary | std::ios::trunc);
        if (data[0] & 1) out << t.header;
        out.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
    }
    const Dataset ds = Dataset::image_folder(t.root, {t.cache_dir, true});
    if (!ds.loaded_from_cache() && (ds.size() != t.size || ds.classes().size() != 2)) __builtin_trap();
    // As a built index: samples and classes, every class with a sample, every path under its class folder.
    if (ds.size() <= 0 || ds.num_classes() <= 0 || size_t(ds.num_classes()) != ds.classes().size()) __builtin_trap();
    std::vector<int> per_class(ds.classes().size());
    for (int64_t i = 0; i < ds.size(); ++i) {
        if (ds.label(i) < 0 || ds.label(i) >= ds.num_classes()) __builtin_trap();
        const std::string p = ds.path(i), cls = t.root + "/" + ds.classes()[size_t(ds.label(i))] + "/";
        if (p.size() <= cls.size() || p.compare(0, cls.size(), cls) != 0) __builtin_trap();
        ++per_class[size_t(ds.label(i))];
    }
    for (int n : per_class)
        if (n == 0) __builtin_trap();
    return 0;
}
