// Data-parallel training (DESIGN.md §4): every rank holds the whole model and a 1/world share of the global
// batch; parameters and buffers start from rank 0's; after backward each trainable parameter's gradient is
// replaced by its mean over the ranks, g = (1/world) Σ_r g_r, so with a per-rank mean loss the update equals one
// process on the global batch. Gradients travel in flattened buckets (reverse registration order, the order
// backward produces them); the MPI sum is per element in rank order, so the result does not depend on the bucket
// size. Synchronised BatchNorm: every BatchNorm's statistics hook sums across ranks (engine/ops/batch_norm.h).
#pragma once
#include <memory>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/nn/module.h"

namespace sslight::dist {

class DataParallel {
public:
    // Buckets are formed here, once: consecutive trainable parameters (reverse registration order) of one
    // dtype and device, each bucket holding at least one parameter and at most bucket_bytes of gradients
    // unless a single parameter is larger. Their flat buffers are allocated here, never in a step.
    DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, size_t bucket_bytes = 25 << 20);

    // Every parameter (trainable or frozen) and buffer takes rank 0's value. Ranks whose models differ in the
    // number or sizes of tensors get an Error naming the difference.
    void broadcast_parameters();

    // Call after backward on every rank. Each trainable parameter's grad becomes the mean over ranks; a grad
    // undefined on a rank counts as zeros there, and stays undefined only where it is undefined on every rank.
    // f32 and f64 parameters.
    void synchronize_gradients();

    // Sets every BatchNorm's args.all_reduce to a sum over this communicator (when world > 1; with one rank
    // BatchNorm keeps its local statistics). Call again after adding BatchNorm layers.
    void enable_sync_batchnorm();

    Communicator& comm() { return *comm_; }
    size_t num_buckets() const { return buckets_.size(); }

private:
    struct Bucket {
        std::vector<Tensor*> params;
        std::vector<int64_t> offsets;  // element offset of each parameter's gradient in flat
        int64_t numel = 0;             // gradient elements; flat holds numel + params.size() (the defined mask)
        Tensor flat;
    };
    void reduce_bucket(Bucket& b);

    nn::Module& model_;
    std::shared_ptr<Communicator> comm_;
    std::vector<Bucket> buckets_;
};

}  // namespace sslight::dist
