// `sslight finetune` (issue 12): semi-supervised full fine-tuning as the SSLight code runs it. The backbone trains
// (train mode) under a 3-layer head Linear(d, h) BN GELU, Linear(h, h) BN GELU, Linear(h, classes) whose first two
// layers (and BatchNorms, for CNN heads) are copied from the DINO student head when the checkpoint has one, else
// fresh (PyTorch's default init; the command says so). Cross-entropy, SGD with Nesterov momentum 0.9, no weight
// decay, lr 0.03 per 256 images with a per-iteration cosine to 1e-6, RandomResizedCrop + flip; top-1 / top-5 per
// epoch and the best epoch. The labelled subset comes from a file of image names (ImageNet's 1% / 10% split files)
// or is drawn per class with a seed and written out. Gradients flow through head and backbone (autograd).
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "apps/supervised.h"
#include "engine/nn/layers.h"

namespace sslight::apps {

struct FinetuneOptions {
    PretrainConfig config;           // the model (model.*, method.* for checkpoints; method.dino_hidden_dim = h),
                                     // run.seed (head init, crops, batch order), run.device, run.log_every
    BackboneSource source;           // neither set: random init
    std::string data, val;           // load_supervised_data; empty data: the embedded digits
    const EmbeddedData* embedded = nullptr;  // tests: the embedded set to use
    double labels_fraction = 0;      // in (0, 1]: a per-class subset drawn with subset_seed and written to <out>
    std::string subset_file;         // else a file of image names; neither: every training label
    uint64_t subset_seed = 0;
    int epochs = 0;                  // 0: 60 when at most 1% of the training labels are used, else 30
    int batch = 128;                 // clamped to the subset size when that is smaller
    double lr = 0.03, final_lr = 1e-6;  // lr per 256 images (peak = lr · batch / 256)
    int crop = 0;                    // 0: data.global_size of the config when set, else 224
    std::string out_dir;             // empty: runs/<config name>/finetune
    std::ostream* log = nullptr;
    int progress = -1;               // -1 live on a terminal, 0 plain lines, 1 live
};

struct FinetuneResult {
    EpochLoopResult loop;
    bool head_from_dino = false;
    std::string head_note;           // what the head started from (printed)
    int64_t train_count = 0, subset_count = 0;
    std::string subset_path;         // the subset file written or read; empty when every label was used
    int epochs = 0, batch = 0;
    std::string out_dir;
    double seconds = 0;
};

// Children "backbone" and "head" (head: Sequential 0 Linear, 1 BN, 2 GELU, 3 Linear, 4 BN, 5 GELU, 6 Linear).
// forward(x) = head(backbone.forward_features(x)).
class FinetuneModel : public nn::Module {
public:
    FinetuneModel(std::shared_ptr<models::Backbone> backbone, int64_t hidden, int64_t classes);
    Tensor forward(const Tensor& x) override;
    std::shared_ptr<models::Backbone> backbone;
    std::shared_ptr<nn::Sequential> head;
};

// Copies the first two layers of a DINO method's student head (its BatchNorms too when it has them, as CNN heads do)
// into head[0], head[1], head[3], head[4]. False (nothing copied) when `method` is not DINO. IoError naming the
// layers when the widths differ.
bool init_head_from_dino(FinetuneModel& model, ssl::Method* method);

// Per class c with n_c training images: max(1, round(fraction · n_c)) of them, drawn by a Fisher-Yates shuffle keyed
// by (seed, c). Positions into `train`, ascending.
std::vector<int64_t> draw_label_subset(const LabeledSplit& train, double fraction, uint64_t seed);
// One image per line: its file name (its path relative to the split root where names repeat), after '#' comments.
void write_subset_file(const std::string& path, const LabeledSplit& train, const std::vector<int64_t>& positions,
                       const std::string& comment);
// Reads such a file (ImageNet's split files included: plain file names): blank lines and '#' comments skipped, each
// line a file name or a path relative to the split root. IoError naming the file, the line and the name for an
// unknown, ambiguous or repeated name, or an empty list. Positions ascending.
std::vector<int64_t> read_subset_file(const std::string& path, const LabeledSplit& train);
// "subset_<100·fraction>pct_seed<seed>.txt", e.g. subset_1pct_seed0.txt.
std::string subset_file_name(double fraction, uint64_t seed);
// 60 when the fraction of labels used is at most 1% (the paper's 1% setting), else 30 (10% and more).
int default_finetune_epochs(double fraction_used);

FinetuneResult run_finetune(const FinetuneOptions& options);

// `sslight finetune [options]` (argv holds the options only): parses, runs, prints to stdout; returns the exit code.
// Bad options throw ConfigError.
int finetune_command(int argc, char** argv);
const char* finetune_usage();

}  // namespace sslight::apps
