// The shared half of the supervised evaluations `sslight linear` and `sslight finetune` (SPEC.md §6, issue 12):
// labelled train/val splits (the embedded digits, an ImageFolder root with train/ and val/, or list files), the
// training transform (RandomResizedCrop + horizontal flip), the evaluation transform (resize the short side to
// crop·256/224, centre crop), top-1/top-5 counting, the backbone to evaluate (checkpoint, exported weights or random
// init) with its probe feature (CNN: pooled; ViT: the last 4 blocks' CLS tokens), and the epoch loop with progress
// lines and metrics.jsonl. Batches are plain data (no gradients); the models they feed record their own.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/config.h"
#include "apps/embedded_data.h"
#include "data/dataset.h"
#include "engine/tensor.h"
#include "models/backbone.h"
#include "ssl/method.h"

namespace sslight::apps {

// One split of a labelled image set: the samples `rows` of an in-memory ImageSet or of a file data set. Sample i of
// the split is row rows[i] of the underlying set; subset() keeps a selection of them.
class LabeledSplit {
public:
    LabeledSplit() = default;
    // `tag` names the images ("<tag>_<row, 5 digits>.png", the file names subset files use). The pointer may be a
    // non-owning alias; the set must then outlive the split.
    static LabeledSplit of_images(std::shared_ptr<const ImageSet> images, const std::string& tag);
    static LabeledSplit of_files(std::shared_ptr<const data::Dataset> files);

    int64_t count() const { return static_cast<int64_t>(rows_.size()); }
    // The sample's row in the underlying set: the stable key of its random draws, the same in every subset.
    int64_t key(int64_t i) const { return rows_.at(static_cast<size_t>(i)); }
    int64_t label(int64_t i) const;
    std::vector<int64_t> labels() const;
    // The image's file name (what ImageNet's 1% / 10% split files list) and its path relative to the data set root.
    std::string name(int64_t i) const;
    std::string relative_path(int64_t i) const;
    // Samples `positions` (indices into this split, each in [0, count())) as a new split.
    LabeledSplit subset(const std::vector<int64_t>& positions) const;

    // RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3), torchvision's sampling from the stream
    // Rng::for_view(seed, epoch, key(i), 0)) of sample i, resampled bicubically to out x out RGB into dst. Files are
    // decoded at the DCT scale the crop needs.
    void train_crop(int64_t i, int out, uint64_t seed, int64_t epoch, uint8_t* dst) const;
    // Resize the short side to `resize` (bicubic, antialiased), centre crop `crop` x `crop` into dst. JPEGs are
    // decoded at the smallest DCT scale whose short side is still >= resize.
    void eval_crop(int64_t i, int resize, int crop, uint8_t* dst) const;

private:
    std::shared_ptr<const ImageSet> images_;
    std::shared_ptr<const data::Dataset> files_;
    std::string tag_;
    std::vector<int64_t> rows_;
};

struct SupervisedData {
    LabeledSplit train, val;
    int64_t num_classes = 0;
    std::string description;
};

// data empty: the embedded digits at `embedded_size` px (`embedded` when given: tests; it must outlive the result).
// val empty: `data` is a folder holding train/ and val/ ImageFolders. Otherwise `data` is the train split and `val`
// the val split, each an ImageFolder root or a "<path> <label>" list file. IoError naming the path and what was
// expected otherwise; ImageFolder splits must have the same class folders.
SupervisedData load_supervised_data(const std::string& data, const std::string& val, int embedded_size,
                                    const EmbeddedData* embedded = nullptr);

// The evaluation transform of a crop size: resize = round(crop · 256 / 224), so 224 gives ImageNet's 256 / 224 and
// smaller crops (the embedded digits: 32 -> 37) keep the same ratio.
struct CropSizes {
    int crop = 224, resize = 256;
};
CropSizes crop_sizes(int crop);
// The crop size of an evaluation: `requested` when > 0, else the config's data.global_size when set (the
// pre-training resolution: 32 px for configs/demo.toml), else 224.
int eval_crop_size(const PretrainConfig& config, int requested);
// The size the embedded digits are stored at for a crop size: the crop size clamped to [20, 64] (the originals are
// 20 px; the transforms resample to the crop size).
inline int embedded_size_for(int crop) { return crop < 20 ? 20 : crop > 64 ? 64 : crop; }

// A training batch of samples `idx`: train_crop keyed by (seed, epoch, sample) and a horizontal flip with p 0.5 drawn
// by data::draw_augment (flip only), normalised with the ImageNet mean and std on `device`: f32 [B, crop, crop, 3].
Tensor train_batch(const LabeledSplit& split, const std::vector<int64_t>& idx, int crop, uint64_t seed, int64_t epoch,
                   Device device);
// The evaluation transform of samples `idx`, normalised: f32 [B, crop, crop, 3] on `device`.
Tensor eval_batch(const LabeledSplit& split, const std::vector<int64_t>& idx, const CropSizes& sizes, Device device);
// i64 [B] labels of samples `idx` on `device`.
Tensor labels_of(const LabeledSplit& split, const std::vector<int64_t>& idx, Device device);
// [begin, end) as an index list.
std::vector<int64_t> index_range(int64_t begin, int64_t end);

// Top-1 / top-5 counts (a label counts as top-k when fewer than k classes score higher, ties broken by the lower
// class index as torch.topk on CPU) and the summed cross-entropy of the rows seen.
struct Accuracy {
    int64_t top1 = 0, top5 = 0, count = 0;
    double loss_sum = 0;
    double top1_fraction() const { return count ? double(top1) / double(count) : 0.0; }
    double top5_fraction() const { return count ? double(top5) / double(count) : 0.0; }
    double mean_loss() const { return count ? loss_sum / double(count) : 0.0; }
};
// logits [B, C] (any device), labels B values in [0, C).
void count_topk(const Tensor& logits, const std::vector<int64_t>& labels, Accuracy& acc);

// The backbone to evaluate: a pre-training checkpoint (the student backbone, as the SSLight code evaluates; the
// config must be the run's), exported weights (sslight export / backbone.safetensors) or, with neither, the
// config's backbone at random init from run.seed.
struct BackboneSource {
    std::string checkpoint, weights;
};
struct LoadedBackbone {
    std::shared_ptr<models::Backbone> backbone;
    std::shared_ptr<ssl::Method> method;  // the whole method when read from a checkpoint (owns the backbone)
    std::string description;
};
LoadedBackbone load_eval_backbone(const PretrainConfig& cfg, const BackboneSource& source);

// The linear-probe feature (SPEC.md §6): ViT: concat of the final-norm CLS tokens of the last 4 blocks; CNN: pooled.
int64_t probe_feature_dim(models::Backbone& backbone);
Tensor probe_features(models::Backbone& backbone, const Tensor& x);

Device resolve_eval_device(const std::string& device);  // "auto" -> the default device
void make_output_dir(const std::string& path);           // mkdir -p; IoError when it cannot be made

// metrics.jsonl: one JSON object per line, "type" first, then the fields in order (non-finite numbers as null).
// append: keep what the file holds (a resumed pretrain run); else start it empty.
class MetricsFile {
public:
    explicit MetricsFile(const std::string& path, bool append = false);
    void write(const std::string& type, const std::vector<std::pair<std::string, double>>& fields);

private:
    std::ofstream f_;
};

// The epoch loop shared by linear and finetune: each epoch shuffles the train split (data::Sampler keyed by
// (seed, epoch), the tail that does not fill a batch dropped), calls train_step per batch, then evaluate; prints
// progress lines (every log_every steps, or one live line on a terminal) and an epoch summary, writes "step"
// (iteration, epoch, loss, lr) and "epoch" (epoch, iteration, loss_mean = the mean training loss, val_loss, top1,
// top5, lr) records in pretrain's schema, so `sslight plot` draws their loss and lr, and a final "best" record;
// tracks the best epoch by val top-1 (the earliest on ties).
struct EpochLoopSettings {
    int epochs = 1;
    int64_t train_count = 0, batch = 1;
    uint64_t seed = 0;
    std::vector<double> lr;  // per iteration (epochs · steps_per_epoch values), logged
    int log_every = 10;
    std::string name;        // "linear" / "finetune", starts the progress lines
    std::ostream* log = nullptr;
    int progress = -1;       // -1: live on a terminal, plain otherwise; 0 plain; 1 live
    MetricsFile* metrics = nullptr;
};
struct EpochRecord {
    int epoch = 0;  // 1-based
    double train_loss = 0, val_loss = 0, top1 = 0, top5 = 0, seconds = 0;
};
struct EpochLoopResult {
    std::vector<EpochRecord> epochs;
    int best_epoch = 0;
    double best_top1 = 0, best_top5 = 0;
    int64_t steps_per_epoch = 0;
};
int64_t steps_per_epoch(int64_t train_count, int64_t batch);  // train_count / batch; ConfigError when 0
// train_step(iteration, epoch, sample indices) returns the batch loss; evaluate(epoch) the val accuracy.
EpochLoopResult run_epoch_loop(const EpochLoopSettings& s,
                               const std::function<double(int64_t, int64_t, const std::vector<int64_t>&)>& train_step,
                               const std::function<Accuracy(int64_t)>& evaluate);

// ---- the command line shared by `sslight linear` and `sslight finetune` --------------------------------------------
// Bad input throws ConfigError (exit code 2) naming the option and what it expects.
struct EvalCommandLine {
    std::string config_path;        // --config; empty: configs/demo.toml when present, else the built-in demo config
    std::vector<std::string> sets;  // --set key=value, in order
    BackboneSource source;          // --checkpoint / --weights
    bool random_init = false;       // --random-init
    std::string data, val, out;     // --data, --val, --out
    int epochs = 0, batch = 0, crop = 0;  // 0: the command's default
    double lr = 0;                  // 0: the command's default
    int progress = -1;              // --progress auto|live|plain
};
// Consumes argv[i] (and its value) when it is a shared option; false otherwise.
bool parse_common_option(const std::string& cmd, EvalCommandLine& c, int& i, int argc, char** argv);
// Checks that exactly one of --checkpoint, --weights, --random-init was given, then loads and validates the config.
PretrainConfig load_command_config(const std::string& cmd, const EvalCommandLine& c);
// The value after argv[i] (advancing i); ConfigError when it is missing.
std::string option_value(const std::string& cmd, const std::string& flag, int& i, int argc, char** argv);
long parse_long_option(const std::string& flag, const std::string& v, long lo, long hi);
double parse_double_option(const std::string& flag, const std::string& v, double lo, double hi);  // in (lo, hi]
// The options text both commands' --help share.
extern const char* const kEvalCommonUsage;

}  // namespace sslight::apps
