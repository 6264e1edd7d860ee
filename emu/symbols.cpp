// ELF symbol lookup for the CPU SIMT emulator: finds a kernel's mangled name from its address and the
// thread-local variables that are its `__shared__` arrays (function-local statics, mangled _ZZ<kernel>E...),
// so that each block starts with poisoned static shared memory, and so that the 48 KiB limit is checked.
// Reads the module's own file (.symtab, else .dynsym); without symbols nothing is poisoned.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "emu/runtime.h"

namespace sslight::emu::detail {
namespace {

struct Module {
    uintptr_t addr = 0;  // query
    bool found = false;
    std::string path;
    uintptr_t bias = 0;
    size_t tls_modid = 0;
};

struct SymTab {
    const ElfW(Sym)* syms = nullptr;
    size_t count = 0;
    const char* names = nullptr;
    size_t names_size = 0;
};

int find_module(dl_phdr_info* info, size_t, void* arg) {
    auto* m = static_cast<Module*>(arg);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && m->addr >= lo && m->addr < lo + ph.p_memsz) {
            m->found = true;
            m->path = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "/proc/self/exe";
            m->bias = info->dlpi_addr;
            m->tls_modid = info->dlpi_tls_modid;
            return 1;
        }
    }
    return 0;
}

// Maps the file once for the life of the process and returns its symbol table (empty on any problem).
const SymTab& symtab(const std::string& path) {
    static std::map<std::string, SymTab> cache;
    auto it = cache.find(path);
    if (it != cache.end()) return it->second;
    SymTab& t = cache[path];
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return t;
    struct stat st;
    void* m = fstat(fd, &st) == 0 ? mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0)
                                  : MAP_FAILED;
    close(fd);
    if (m == MAP_FAILED) return t;
    const auto* base = static_cast<const unsigned char*>(m);
    const size_t size = static_cast<size_t>(st.st_size);
    const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(base);
    if (size < sizeof(ElfW(Ehdr)) || std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_shentsize != sizeof(ElfW(Shdr)) || eh->e_shoff + size_t(eh->e_shnum) * sizeof(ElfW(Shdr)) > size) {
        return t;
    }
    const auto* sh = reinterpret_cast<const ElfW(Shdr)*>(base + eh->e_shoff);
    for (const unsigned type : {unsigned(SHT_SYMTAB), unsigned(SHT_DYNSYM)}) {
        for (int i = 0; i < eh->e_shnum; ++i) {
            if (sh[i].sh_type != type || sh[i].sh_link >= eh->e_shnum) continue;
            const ElfW(Shdr)& str = sh[sh[i].sh_link];
            if (sh[i].sh_offset + sh[i].sh_size > size || str.sh_offset + str.sh_size > size) continue;
            t.syms = reinterpret_cast<const ElfW(Sym)*>(base + sh[i].sh_offset);
            t.count = sh[i].sh_size / sizeof(ElfW(Sym));
            t.names = reinterpret_cast<const char*>(base + str.sh_offset);
            t.names_size = str.sh_size;
            return t;
        }
    }
    return t;
}

const char* sym_name(const SymTab& t, const ElfW(Sym)& s) {
    return s.st_name < t.names_size ? t.names + s.st_name : "";
}

struct TlsQuery {
    size_t modid;
    unsigned char* block;
};

int find_tls(dl_phdr_info* info, size_t, void* arg) {
    auto* q = static_cast<TlsQuery*>(arg);
    if (info->dlpi_tls_modid != q->modid) return 0;
    q->block = static_cast<unsigned char*>(info->dlpi_tls_data);
    return 1;
}

}  // namespace

const KernelInfo& kernel_info(const void* kernel) {
    static std::mutex m;
    static std::unordered_map<const void*, std::unique_ptr<KernelInfo>> cache;
    std::lock_guard<std::mutex> lk(m);
    auto& slot = cache[kernel];
    if (slot) return *slot;
    slot = std::make_unique<KernelInfo>();
    KernelInfo& info = *slot;
    Module mod;
    mod.addr = reinterpret_cast<uintptr_t>(kernel);
    dl_iterate_phdr(&find_module, &mod);
    if (!mod.found) return info;
    const SymTab& t = symtab(mod.path);
    const uintptr_t value = mod.addr - mod.bias;
    for (size_t i = 0; i < t.count && info.symbol.empty(); ++i) {
        const ElfW(Sym)& s = t.syms[i];
        if (ELF64_ST_TYPE(s.st_info) == STT_FUNC && s.st_value == value && std::strncmp(sym_name(t, s), "_Z", 2) == 0)
            info.symbol = sym_name(t, s);
    }
    if (info.symbol.empty()) return info;
    // Function-local statics of the kernel: _ZZ + <encoding without _Z> + E + <local name>.
    const std::string prefix = "_ZZ" + info.symbol.substr(2) + "E";
    for (size_t i = 0; i < t.count; ++i) {
        const ElfW(Sym)& s = t.syms[i];
        if (ELF64_ST_TYPE(s.st_info) != STT_TLS || s.st_size == 0) continue;
        if (std::strncmp(sym_name(t, s), prefix.c_str(), prefix.size()) != 0) continue;
        info.smem_ranges.emplace_back(static_cast<size_t>(s.st_value), static_cast<size_t>(s.st_size));
        info.static_smem += s.st_size;
    }
    info.tls_module = mod.tls_modid;
    return info;
}

unsigned char* tls_block(size_t modid) {
    if (modid == 0) return nullptr;
    TlsQuery q{modid, nullptr};
    dl_iterate_phdr(&find_tls, &q);
    return q.block;
}

}  // namespace sslight::emu::detail
