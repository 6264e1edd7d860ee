// Data-parallel wiring of a self-supervised method (issue 7): the method's cross-rank steps (DINO's centre sum,
// SwAV's Sinkhorn sums, MoCo's key all_gather) go through a dist::Communicator, and every BatchNorm of the method
// (student backbone and heads, teacher / key encoder) is synchronised, so a step on world × B/world images equals
// one process on B images. Not differentiable: the hooks act on constants (teacher outputs, codes, keys) and on
// BatchNorm statistics, whose backward sums synchronised BN all-reduces itself.
#pragma once
#include <memory>

#include "engine/dist/communicator.h"
#include "ssl/method.h"

namespace sslight::ssl {

// Fills m.dist (all_reduce_sum: comm->all_reduce(sum) in place; all_gather: comm->all_gather along dim 0;
// world_size: comm->world()) and sets every BatchNorm's args.all_reduce in m, teacher and key encoder included.
// With one rank the hooks stay empty and BatchNorm keeps its local statistics (the single-process numerics).
// Call after the model is on its device and before the first forward_loss; again after adding BatchNorm layers.
void attach_data_parallel(Method& m, std::shared_ptr<dist::Communicator> comm);

}  // namespace sslight::ssl
