// Data-parallel wiring of a self-supervised method (issue 7): the method's cross-rank steps (DINO's centre sum,
// SwAV's Sinkhorn sums, MoCo's key all_gather) go through a dist::Communicator, and every BatchNorm of the method
// (student backbone and heads, teacher / key encoder) is synchronised, so a step on world × B/world images equals
// one process on B images; DataParallelTrainer adds the gradient averaging and the training loop's collectives.
// Not differentiable: the hooks act on constants (teacher outputs, codes, keys) and on BatchNorm statistics, whose
// backward sums synchronised BN all-reduces itself.
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "engine/dist/communicator.h"
#include "engine/dist/data_parallel.h"
#include "ssl/method.h"

namespace sslight::ssl {

// Fills m.dist (all_reduce_sum: comm->all_reduce(sum) in place; all_gather: comm->all_gather along dim 0;
// world_size: comm->world()) and sets every BatchNorm's args.all_reduce in m, teacher and key encoder included.
// With one rank the hooks stay empty and BatchNorm keeps its local statistics (the single-process numerics).
// Call after the model is on its device and before the first forward_loss; again after adding BatchNorm layers.
void attach_data_parallel(Method& m, std::shared_ptr<dist::Communicator> comm);

// The images per rank and step: global_batch / world; ConfigError when the world size does not divide it.
int64_t local_batch_of(int64_t global_batch, int world);

// The data-parallel side of a training loop over a Method (sslight pretrain). With world > 1: attach_data_parallel
// and a dist::DataParallel over the whole method (gradient buckets over the student's trainable parameters, launched
// during backward; every parameter and registered buffer, i.e. teacher, running statistics, DINO's centre and MoCo's
// queue, broadcast from rank 0). With one rank nothing is attached and every call is free. Build it after the method
// is on its device.
class DataParallelTrainer {
public:
    // global_batch must be divisible by the world size: each rank trains on global_batch / world images per step.
    DataParallelTrainer(Method& m, std::shared_ptr<dist::Communicator> comm, int64_t global_batch);
    ~DataParallelTrainer();

    dist::Communicator& comm() { return *comm_; }
    int rank() const { return comm_->rank(); }
    int world() const { return comm_->world(); }
    bool is_root() const { return comm_->rank() == 0; }  // the one rank that writes files and logs
    int64_t local_batch() const { return local_batch_; }

    void broadcast_state();        // rank 0's parameters and buffers on every rank (start, after a resume)
    void synchronize_gradients();  // after backward: every gradient becomes the global-batch one
    // The mean of the ranks' losses (non-finite when any is), so every rank logs it and stops on it alike.
    double global_loss(double loss);
    // Both in one all-reduce: {global_loss(loss), any_rank(stop)}.
    std::pair<double, bool> step_consensus(double loss, bool stop);
    // Whether `flag` is set on any rank (a stop signal that reached one rank stops all of them after the same step).
    bool any_rank(bool flag);
    // Every rank must hold the same value (the resumed iteration: the output folder must be shared); an Error on
    // every rank otherwise, naming the values.
    void check_agree(int64_t value, const std::string& what);
    // Rows [lo, hi) of dist::shard_range(total) computed on this rank -> all `total` rows, on every rank.
    Tensor gather_shards(const Tensor& rows, int64_t total);

private:
    std::shared_ptr<dist::Communicator> comm_;
    int64_t local_batch_ = 0;
    std::unique_ptr<dist::DataParallel> dp_;
};

}  // namespace sslight::ssl
