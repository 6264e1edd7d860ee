// The threaded multi-crop input pipeline (SPEC.md §1-2): N workers decode each sample once (at the DCT scale its
// largest crop needs) and resample every view of it straight into reused uint8 NHWC batch buffers, one per
// resolution group (globals, then locals); whole batches go through a bounded queue, in order. Every random
// draw is keyed by (seed, epoch, sample, view), so batches are bit-identical whatever the thread count.
// augment_group applies the photometric kernel (kernels/augment.h) on the CPU or the GPU. No gradients.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/augment_params.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "data/recipe.h"
#include "engine/tensor.h"

namespace sslight::data {

struct LoaderOptions {
    int batch_size = 0;        // samples per batch (per rank)
    int num_threads = 0;       // decode workers; 0 = all cores
    int prefetch_batches = 2;  // batches decoded ahead of the consumer (the queue depth, >= 1)
    uint64_t seed = 0;
    int rank = 0, world = 1;
    bool drop_last = true;     // drop the last partial batch (and the sampler's tail, as DistributedSampler)
    int max_bad_reports = 20;  // bad files reported one by one to stderr; the rest only in the epoch summary
    double max_bad_fraction = 0.5;  // more bad files than this fraction of the files tried in an epoch: stop
    DecodeLimits limits;
    bool pinned = false;       // page-lock the batch buffers (cudaHostRegister) in CUDA builds; plain otherwise
};

// One batch of B samples. groups[0] holds the global views, groups[1] the local views (absent when the recipe
// has none): u8 NHWC [B * views_in_group, S, S, 3], view-major (row = view_in_group * B + sample). The crops
// are not flipped yet: params[g][row].flip tells the photometric kernel to do it. The tensors share reused
// buffers: the loader recycles a buffer on the next call to next() unless the caller still holds a reference
// to it (copied tensors stay valid; the loader then allocates a fresh buffer).
struct MultiCropBatch {
    std::vector<Tensor> groups;
    std::vector<std::vector<AugmentParams>> params;  // per group, per row
    Tensor labels;                                   // i64 [B]
    std::vector<int64_t> indices;                    // the data set index of each sample (after replacement)
    int64_t epoch = 0, step = 0;                     // step: batch number within the epoch
    int64_t batch_size() const { return labels.defined() ? labels.numel() : 0; }
};

struct LoaderStats {
    int64_t samples = 0;        // samples delivered in batches
    int64_t batches = 0;
    int64_t bad_files = 0;      // failed decodes (each replaced by another sample)
    int64_t buffers = 0;        // batch buffers allocated so far (bounded by prefetch_batches + 1 while the
                                // caller does not keep batches)
    double decode_seconds = 0;  // worker time in read + decode, summed over workers
    double crop_seconds = 0;    // worker time in resampling
    double wait_seconds = 0;    // consumer time blocked in next()
};

// The groups of a recipe: globals (all one size) then locals (all one size). Throws ConfigError otherwise.
struct ViewGroup {
    int size = 0;
    std::vector<int> views;  // recipe view indices in this group
};
std::vector<ViewGroup> view_groups(const ViewRecipe& r);

// The replacement probe sequence of a bad sample: candidate j (j >= 1) of sample `index` in a data set of n
// files is splitmix64(seed ^ (index * golden) ^ j * C) mod n — fixed by (seed, index, j), independent of the
// epoch, the rank and the thread count.
int64_t replacement_candidate(uint64_t seed, int64_t index, int j, int64_t n);
constexpr int kMaxReplacementProbes = 32;

class MultiCropLoader {
public:
    // Validates the options and the recipe (ConfigError), needs a non-empty data set (IoError) and at least one
    // batch per epoch. Starts the workers; they wait for start_epoch().
    MultiCropLoader(const Dataset& dataset, const ViewRecipe& recipe, LoaderOptions opts);
    ~MultiCropLoader();  // stops mid-epoch: stop flag, wakes every waiter, joins the workers
    MultiCropLoader(const MultiCropLoader&) = delete;
    MultiCropLoader& operator=(const MultiCropLoader&) = delete;

    // Begins an epoch (abandoning what is left of the current one). next() before any start_epoch starts 0.
    void start_epoch(int64_t epoch);
    // The next batch of the epoch in order; false at the epoch's end. Throws IoError when too many files are
    // bad (LoaderOptions::max_bad_fraction) or a sample and all its replacements fail.
    bool next(MultiCropBatch& out);
    int64_t batches_per_epoch() const;
    int num_threads() const;
    const std::vector<ViewGroup>& groups() const;
    LoaderStats stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The photometric part of one group: u8 NHWC [R, S, S, 3] crops + R parameter sets -> normalised [R, S, S, 3]
// activations of dtype f32 or bf16 on `device` (a CPU group is copied to the GPU for a CUDA device).
Tensor augment_group(const Tensor& u8, const std::vector<AugmentParams>& params, Device device,
                     DType dtype = DType::f32);

}  // namespace sslight::data
