// Data set indexes and the distributed sampler. ImageFolder (torchvision semantics: root/<class>/**/*.jpg|jpeg|png,
// extensions case-insensitive, class names sorted into labels 0..K-1, files sorted within each folder) with an
// index cached on disk and rebuilt when any indexed folder's mtime changes; a plain "path label" list file.
// Sampler: torch's DistributedSampler (per-epoch shuffle, padding or drop_last) on a Philox Fisher-Yates
// shuffle keyed by (seed, epoch). Nothing here is differentiable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sslight::data {

struct IndexOptions {
    // Where the index cache goes: this folder if set (created when missing), else the data set root when it
    // is writable, else nowhere (the index is rebuilt on every start).
    std::string cache_dir;
    bool use_cache = true;
};

constexpr size_t kMaxListLineBytes = 64 << 10;        // one "<path> <label>" line of a list file
constexpr size_t kMaxListEntries = size_t(INT32_MAX);  // samples in one list file (int32 labels, int64 index)

// An immutable list of (path, label). Paths are stored once in a single buffer (ImageNet's 1.28 M paths
// take ~60 MB).
class Dataset {
public:
    // Errors (sslight::IoError) name the path: missing or unreadable root, no class folder, a class folder
    // without images (as torchvision), an empty data set.
    static Dataset image_folder(const std::string& root, const IndexOptions& opts = {});
    // One sample per line: "<path> <label>" (the label is the last field, so paths may contain spaces);
    // relative paths are resolved against the list file's folder; blank lines and '#' comments are skipped.
    // Lines longer than kMaxListLineBytes, NUL bytes and more than kMaxListEntries samples are IoErrors.
    static Dataset list_file(const std::string& path);

    int64_t size() const { return static_cast<int64_t>(labels_.size()); }
    std::string path(int64_t i) const;  // full path of sample i
    int64_t label(int64_t i) const { return labels_.at(static_cast<size_t>(i)); }
    int64_t num_classes() const { return num_classes_; }
    const std::vector<std::string>& classes() const { return classes_; }  // ImageFolder only; empty for lists
    const std::string& root() const { return root_; }
    bool loaded_from_cache() const { return from_cache_; }
    const std::string& cache_path() const { return cache_path_; }  // empty when no cache was used

private:
    friend struct DatasetBuilder;
    std::string root_;               // prefix of every relative path, ends with '/' (empty for absolute paths)
    std::string blob_;               // the relative paths, back to back
    std::vector<uint64_t> offsets_;  // size() + 1 offsets into blob_
    std::vector<int32_t> labels_;
    std::vector<std::string> classes_;
    int64_t num_classes_ = 0;
    bool from_cache_ = false;
    std::string cache_path_;
};

// torch.utils.data.DistributedSampler with shuffle: the n indices permuted by a shuffle keyed by
// (seed, epoch) (the same on every rank), then either truncated to a multiple of world (drop_last) or padded
// by repeating the first indices, and rank r takes positions r, r + world, ... . Every rank gets
// num_samples() indices, the shards are disjoint (apart from padding), and the result depends only on
// (n, rank, world, seed, drop_last, epoch).
class Sampler {
public:
    Sampler(int64_t n, int rank, int world, uint64_t seed, bool drop_last, bool shuffle = true);
    bool drop_last() const { return drop_last_; }
    std::vector<int64_t> epoch_indices(int64_t epoch) const;
    int64_t num_samples() const { return num_samples_; }  // per rank
    int64_t total_size() const { return num_samples_ * world_; }

private:
    int64_t n_;
    int rank_, world_;
    uint64_t seed_;
    bool drop_last_, shuffle_;
    int64_t num_samples_;
};

}  // namespace sslight::data
