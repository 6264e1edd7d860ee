// attach_data_parallel: the method's DistHooks through a communicator (sum all_reduce in place, all_gather along
// dim 0) and synchronised BatchNorm over every BatchNorm module of the method, teacher and key encoder included
// (DataParallel::enable_sync_batchnorm covers only the trainable model it wraps). No gradients pass through here.
#include "ssl/distributed.h"

#include "engine/nn/layers.h"

namespace sslight::ssl {

void attach_data_parallel(Method& m, std::shared_ptr<dist::Communicator> comm) {
    SSL_CHECK(comm != nullptr, "attach_data_parallel: the communicator is null");
    const bool multi = comm->world() > 1;
    m.dist = DistHooks{};
    m.dist.world_size = comm->world();
    if (multi) {
        m.dist.all_reduce_sum = [comm](Tensor& t) { comm->all_reduce(t, dist::ReduceOp::sum); };
        m.dist.all_gather = [comm](const Tensor& t) {
            Tensor out;
            comm->all_gather(t, out);
            return out;
        };
    }
    for (auto& [name, module] : m.named_modules()) {
        auto* bn = dynamic_cast<nn::BatchNorm*>(module);
        if (bn == nullptr) continue;
        if (multi)
            bn->args.all_reduce = [comm](Tensor& stats) { comm->all_reduce(stats, dist::ReduceOp::sum); };
        else
            bn->args.all_reduce = nullptr;
    }
}

}  // namespace sslight::ssl
