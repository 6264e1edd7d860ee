// ImageFolder indexing (a sorted walk as torchvision's make_dataset), its on-disk cache (text, written to a
// temporary file then renamed, keyed on the mtime of every indexed folder: adding, removing or renaming a file
// or a folder anywhere in the tree changes one of them), list files, and the distributed sampler.
#include "data/dataset.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "data/crop.h"
#include "engine/check.h"

namespace sslight::data {

namespace {

constexpr const char* kCacheMagic = "sslight-index 1";

bool has_image_extension(const std::string& name) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) return false;
    std::string ext = name.substr(dot + 1);
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return ext == "jpg" || ext == "jpeg" || ext == "png";
}

struct DirStamp {
    std::string rel;  // relative to the root ("." for the root itself)
    int64_t sec = 0, nsec = 0;
};

bool stat_dir(const std::string& path, DirStamp& stamp) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    stamp.sec = st.st_mtim.tv_sec;
    stamp.nsec = st.st_mtim.tv_nsec;
    return true;
}

// Names of the entries of `dir`, split into folders and files (symbolic links followed, as os.walk with
// followlinks=True).
void list_dir(const std::string& dir, std::vector<std::string>& dirs, std::vector<std::string>& files) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) throw IoError(str("cannot read the folder '", dir, "': ", std::strerror(errno)));
    while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        unsigned char type = e->d_type;
        if (type == DT_LNK || type == DT_UNKNOWN) {
            struct stat st;
            if (::stat((dir + "/" + name).c_str(), &st) != 0) continue;  // dangling link
            type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        (type == DT_DIR ? dirs : files).push_back(name);
    }
    ::closedir(d);
    std::sort(dirs.begin(), dirs.end());
    std::sort(files.begin(), files.end());
}

std::string absolute_path(const std::string& p) {
    char buf[PATH_MAX];
    return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

std::string hex_hash(const std::string& s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

}  // namespace

// Builds a Dataset: appends samples, walks ImageFolder trees, reads and writes the cache.
struct DatasetBuilder {
    Dataset ds;
    std::vector<DirStamp> stamps;

    void add(const std::string& rel, int64_t label) {
        ds.blob_ += rel;
        ds.offsets_.push_back(ds.blob_.size());
        ds.labels_.push_back(static_cast<int32_t>(label));
    }

    // Every image under root/cls (recursively): folders in path order as sorted(os.walk(...)), files sorted
    // within each folder.
    void walk_class(const std::string& root, const std::string& cls, int64_t label) {
        std::vector<std::string> pending{cls};
        std::vector<std::pair<std::string, std::vector<std::string>>> walked;
        while (!pending.empty()) {
            const std::string rel = pending.back();
            pending.pop_back();
            SSL_CHECK_T(IoError, std::count(rel.begin(), rel.end(), '/') < 32, "ImageFolder: folders nested deeper ",
                        "than 32 levels under '", root, "/", cls, "' (a symbolic link loop?)");
            std::vector<std::string> dirs, files;
            list_dir(root + "/" + rel, dirs, files);
            for (const std::string& d : dirs) pending.push_back(rel + "/" + d);
            walked.emplace_back(rel, std::move(files));
        }
        std::sort(walked.begin(), walked.end());
        for (const auto& [rel, files] : walked) {
            DirStamp st{rel};
            if (stat_dir(root + "/" + rel, st)) stamps.push_back(st);
            for (const std::string& f : files)
                if (has_image_extension(f)) add(rel + "/" + f, label);
        }
    }

    void build(const std::string& root) {
        DirStamp top{"."};
        stat_dir(root, top);
        stamps.push_back(top);
        std::vector<std::string> classes, files;
        list_dir(root, classes, files);
        if (classes.empty())
            throw IoError(str("ImageFolder: no class folder in '", root, "' (expected root/<class>/*.jpg)"));
        std::vector<std::string> empty;
        for (size_t c = 0; c < classes.size(); ++c) {
            const size_t before = ds.labels_.size();
            walk_class(root, classes[c], static_cast<int64_t>(c));
            if (ds.labels_.size() == before) empty.push_back(classes[c]);
        }
        if (!empty.empty()) {
            std::string names;
            for (const std::string& e : empty) names += (names.empty() ? "" : ", ") + e;
            throw IoError(str("ImageFolder '", root, "': no .jpg/.jpeg/.png file in the class folder(s) ", names));
        }
        ds.classes_ = classes;
        ds.num_classes_ = static_cast<int64_t>(classes.size());
    }

    // A cache is used only when it is exactly what save_cache writes for a tree like the one on disk: classes
    // sorted and unique, each stamped and holding samples, every sample below its class folder without "..".
    bool well_formed(const std::set<std::string>& stamped) const {
        const std::vector<std::string>& cls = ds.classes_;
        if (cls.empty() || ds.labels_.empty() || !stamped.count(".")) return false;
        for (size_t c = 0; c < cls.size(); ++c)
            if (cls[c].empty() || cls[c].find('/') != std::string::npos || cls[c] == "." || cls[c] == ".." ||
                (c > 0 && !(cls[c - 1] < cls[c])) || !stamped.count(cls[c]))
                return false;
        std::vector<bool> used(cls.size());
        for (size_t i = 0; i < ds.labels_.size(); ++i) {
            const size_t c = static_cast<size_t>(ds.labels_[i]);
            const std::string rel = ds.blob_.substr(ds.offsets_[i], ds.offsets_[i + 1] - ds.offsets_[i]);
            if (rel.size() <= cls[c].size() + 1 || rel.compare(0, cls[c].size(), cls[c]) != 0 ||
                rel[cls[c].size()] != '/' || ("/" + rel + "/").find("/../") != std::string::npos)
                return false;
            used[c] = true;
        }
        return std::find(used.begin(), used.end(), false) == used.end();
    }

    bool load_cache(const std::string& file, const std::string& root) {
        std::ifstream in(file);
        std::string line;
        if (!in || !std::getline(in, line) || line != kCacheMagic) return false;
        if (!std::getline(in, line) || line != "root " + absolute_path(root)) return false;
        size_t count = 0;
        in >> line >> count;
        if (!in || line != "dirs") return false;
        std::set<std::string> stamped;
        for (size_t i = 0; i < count; ++i) {
            DirStamp want, now;
            in >> want.sec >> want.nsec;
            in.get();
            if (!std::getline(in, want.rel)) return false;
            if (!stat_dir(root + "/" + want.rel, now) || now.sec != want.sec || now.nsec != want.nsec) return false;
            stamped.insert(want.rel);
        }
        in >> line >> count;
        if (!in || line != "classes") return false;
        in.get();
        // Grown line by line, never sized by the (possibly corrupt) count: a bad cache costs at most its length.
        ds.classes_.clear();
        for (size_t i = 0; i < count; ++i) {
            if (!std::getline(in, line)) return false;
            ds.classes_.push_back(line);
        }
        in >> line >> count;
        if (!in || line != "samples") return false;
        for (size_t i = 0; i < count; ++i) {
            int64_t label = 0;
            in >> label;
            in.get();
            if (!std::getline(in, line) || label < 0 || label >= int64_t(ds.classes_.size())) return false;
            add(line, label);
        }
        if (in.peek() != std::char_traits<char>::eof() || !well_formed(stamped)) return false;
        ds.num_classes_ = static_cast<int64_t>(ds.classes_.size());
        return true;
    }

    // Writes the cache beside a temporary name and renames it into place, so that readers never see a
    // partial file; failures only mean no cache.
    void save_cache(const std::string& file, const std::string& root) const {
        if (ds.blob_.find('\n') != std::string::npos) return;
        const std::string tmp = file + ".tmp." + std::to_string(::getpid());
        {
            std::ofstream out(tmp, std::ios::trunc);
            if (!out) return;
            out << kCacheMagic << "\nroot " << absolute_path(root) << "\ndirs " << stamps.size() << "\n";
            for (const DirStamp& s : stamps) out << s.sec << " " << s.nsec << " " << s.rel << "\n";
            out << "classes " << ds.classes_.size() << "\n";
            for (const std::string& c : ds.classes_) out << c << "\n";
            out << "samples " << ds.labels_.size() << "\n";
            for (size_t i = 0; i < ds.labels_.size(); ++i) {
                out << ds.labels_[i] << " ";
                out.write(ds.blob_.data() + ds.offsets_[i], std::streamsize(ds.offsets_[i + 1] - ds.offsets_[i]));
                out << "\n";
            }
            if (!out.flush()) {
                std::remove(tmp.c_str());
                return;
            }
        }
        if (std::rename(tmp.c_str(), file.c_str()) != 0) std::remove(tmp.c_str());
    }
};

std::string Dataset::path(int64_t i) const {
    const size_t k = static_cast<size_t>(i);
    SSL_CHECK(i >= 0 && k + 1 < offsets_.size(), "Dataset::path: index ", i, " out of range [0, ", size(), ")");
    return root_ + blob_.substr(offsets_[k], offsets_[k + 1] - offsets_[k]);
}

Dataset Dataset::image_folder(const std::string& root_in, const IndexOptions& opts) {
    std::string root = root_in;
    while (root.size() > 1 && root.back() == '/') root.pop_back();
    struct stat st;
    if (::stat(root.c_str(), &st) != 0) {
        throw IoError(str("ImageFolder: the data set folder '", root, "' does not exist (", std::strerror(errno), ")"));
    }
    if (!S_ISDIR(st.st_mode)) throw IoError(str("ImageFolder: '", root, "' is not a folder"));
    std::string cache;
    if (opts.use_cache && !opts.cache_dir.empty()) {
        ::mkdir(opts.cache_dir.c_str(), 0755);
        cache = opts.cache_dir + "/sslight_index_" + hex_hash(absolute_path(root)) + ".txt";
    } else if (opts.use_cache && ::access(root.c_str(), W_OK) == 0) {
        cache = root + "/.sslight_index.txt";
    }
    DatasetBuilder b;
    b.ds.offsets_.push_back(0);
    if (!cache.empty() && b.load_cache(cache, root)) {
        b.ds.from_cache_ = true;
    } else {
        b = DatasetBuilder{};
        b.ds.offsets_.push_back(0);
        b.build(root);
        if (!cache.empty()) b.save_cache(cache, root);
    }
    b.ds.root_ = root + "/";
    b.ds.cache_path_ = cache;
    return std::move(b.ds);
}

namespace {

// std::getline with a cap: false at the end of the input, IoError when a line is longer than kMaxListLineBytes
// (a file that is not a list file must not make the reader allocate without bound).
bool read_list_line(std::istream& in, std::string& line, const std::string& path, int64_t lineno) {
    line.clear();
    std::streambuf* sb = in.rdbuf();
    for (;;) {
        const int c = sb->sbumpc();
        if (c == std::char_traits<char>::eof()) return !line.empty();
        if (c == '\n') return true;
        if (line.size() >= kMaxListLineBytes)
            throw IoError(str("list file '", path, "' line ", lineno, " is longer than ", kMaxListLineBytes,
                              " bytes: not a list file?"));
        line += static_cast<char>(c);
    }
}

}  // namespace

Dataset Dataset::list_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(str("cannot read the list file '", path, "': ", std::strerror(errno)));
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
    DatasetBuilder b;
    b.ds.offsets_.push_back(0);
    int64_t max_label = -1;
    std::string line;
    for (int64_t lineno = 1; read_list_line(in, line, path, lineno); ++lineno) {
        const size_t first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos || line[first] == '#') continue;
        if (line.find('\0') != std::string::npos)
            throw IoError(str("list file '", path, "' line ", lineno, ": NUL byte (not a text file?)"));
        if (b.ds.labels_.size() >= kMaxListEntries)
            throw IoError(str("list file '", path, "' lists more than ", kMaxListEntries, " samples"));
        const size_t last = line.find_last_not_of(" \t\r");
        const std::string body = line.substr(first, last - first + 1);
        const size_t sep = body.find_last_of(" \t");
        char* end = nullptr;
        const long long label = sep == std::string::npos ? -1 : std::strtoll(body.c_str() + sep + 1, &end, 10);
        if (sep == std::string::npos || *end != '\0' || label < 0 || label > INT32_MAX) {
            throw IoError(str("list file '", path, "' line ", lineno,
                              ": expected '<path> <label>' with a label >= 0, got '", body, "'"));
        }
        std::string p = body.substr(0, body.find_last_not_of(" \t", sep) + 1);
        b.add(p[0] == '/' ? p : dir + p, label);
        max_label = std::max<int64_t>(max_label, label);
    }
    if (in.bad()) throw IoError(str("error while reading the list file '", path, "'"));
    if (b.ds.labels_.empty()) throw IoError(str("the list file '", path, "' lists no image"));
    b.ds.num_classes_ = max_label + 1;
    return std::move(b.ds);
}

// ---- Sampler ---------------------------------------------------------------------------------------------
Sampler::Sampler(int64_t n, int rank, int world, uint64_t seed, bool drop_last, bool shuffle)
    : n_(n), rank_(rank), world_(world), seed_(seed), drop_last_(drop_last), shuffle_(shuffle) {
    SSL_CHECK(n > 0, "Sampler: the data set is empty");
    SSL_CHECK(world >= 1 && rank >= 0 && rank < world, "Sampler: rank ", rank, " is not in [0, world = ", world, ")");
    num_samples_ = drop_last ? n / world : (n + world - 1) / world;
    SSL_CHECK(num_samples_ > 0, "Sampler: ", n, " samples cannot give each of ", world, " ranks one with drop_last");
}

std::vector<int64_t> Sampler::epoch_indices(int64_t epoch) const {
    std::vector<int64_t> perm(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) perm[static_cast<size_t>(i)] = i;
    if (shuffle_) {  // Fisher-Yates, the same on every rank
        Rng rng(derive(seed_, {0x53414d504c4552ull /* "SAMPLER" */, static_cast<uint64_t>(epoch)}));
        for (int64_t i = n_ - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.randint(0, i + 1))]);
    }
    const int64_t total = total_size();
    std::vector<int64_t> mine;
    mine.reserve(static_cast<size_t>(num_samples_));
    for (int64_t pos = rank_; pos < total; pos += world_) mine.push_back(perm[static_cast<size_t>(pos % n_)]);
    return mine;
}

}  // namespace sslight::data
