// Data-parallel training (DESIGN.md §4): every rank holds the whole model and a 1/world share of the global batch;
// parameters and buffers start from rank 0's; each trainable parameter's gradient becomes its mean over the ranks,
// g = (1/world) Σ_r g_r, so with a per-rank mean loss the update equals one process on the global batch. Gradients
// travel in flattened buckets (reverse registration order, the order backward produces them), each launched on the
// communicator's asynchronous channel as soon as backward has produced all of its gradients (autograd post-accumulate
// hooks), overlapping the rest of backward; MPI sums in rank order, so no bucket size changes a bit. Sync BatchNorm.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/nn/module.h"

namespace sslight::dist {

class DataParallel {
public:
    // Buckets are formed here, once: consecutive trainable parameters (reverse registration order) of one dtype and
    // device, each bucket holding at least one parameter and at most bucket_bytes of gradients unless a single
    // parameter is larger. Their flat buffers are allocated here, never in a step.
    // overlap = true: a post-accumulate hook on every trainable parameter copies its gradient into its bucket when
    // backward produces it and launches the bucket's all_reduce_async once the bucket is complete (buckets launch in
    // order). Gradients are then taken as backward leaves them: changes made between backward and
    // synchronize_gradients() are not seen, and a second backward before synchronize_gradients() is an error (build
    // with overlap = false to accumulate several backward passes or edit gradients first).
    DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, size_t bucket_bytes = 25 << 20,
                 bool overlap = true);
    ~DataParallel();  // removes the hooks
    DataParallel(const DataParallel&) = delete;
    DataParallel& operator=(const DataParallel&) = delete;

    // Every parameter (trainable or frozen) and buffer takes rank 0's value. Ranks whose models differ in the
    // number or sizes of tensors get an Error naming the difference.
    void broadcast_parameters();

    // Call after backward on every rank: launches the buckets not launched yet, waits for all of them, and each
    // trainable parameter's grad becomes the mean over ranks; a grad undefined on a rank counts as zeros there, and
    // stays undefined only where it is undefined on every rank. f32 and f64 parameters.
    void synchronize_gradients();

    // Sets every BatchNorm's args.all_reduce to a sum over this communicator (when world > 1; with one rank
    // BatchNorm keeps its local statistics). Call again after adding BatchNorm layers.
    void enable_sync_batchnorm();

    Communicator& comm() { return *comm_; }
    size_t num_buckets() const { return buckets_.size(); }
    // Buckets whose all-reduce has been launched since the last synchronize_gradients() (during backward when
    // overlapping).
    size_t num_launched() const { return next_launch_; }

private:
    struct Bucket {
        std::vector<Tensor*> params;
        std::vector<std::string> names;
        std::vector<int64_t> offsets;  // element offset of each parameter's gradient in flat
        int64_t numel = 0;             // gradient elements; flat holds numel + params.size() (the defined flags)
        Tensor flat, ones;             // ones: params.size() ones on the bucket's device, the flags' starting value
        // This step:
        std::vector<char> filled, defined;  // the parameter's gradient (or zeros) is in flat; it had a gradient
        size_t num_filled = 0;
        std::shared_ptr<Work> work;  // launched
    };
    void on_gradient(size_t b, size_t i);  // the post-accumulate hook of parameter i of bucket b
    void fill(Bucket& b, size_t i);        // parameter i's gradient (or zeros) into flat
    void launch_ready();                   // launches complete buckets, in bucket order
    void launch(Bucket& b);                // writes the flags, starts all_reduce_async
    void finish(Bucket& b);                // waits, averages, copies the gradients back

    nn::Module& model_;
    std::shared_ptr<Communicator> comm_;
    std::vector<Bucket> buckets_;
    size_t next_launch_ = 0;
    std::vector<uint64_t> hooks_;
};

}  // namespace sslight::dist
