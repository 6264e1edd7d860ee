// attach_data_parallel: the method's DistHooks through a communicator (sum all_reduce in place, all_gather along
// dim 0) and synchronised BatchNorm over every BatchNorm module of the method, teacher and key encoder included
// (DataParallel::enable_sync_batchnorm covers only the trainable model it wraps). DataParallelTrainer: the training
// loop's data-parallel calls (gradient averaging, loss and stop consensus). No gradients pass through here.
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

int64_t local_batch_of(int64_t global_batch, int world) {
    SSL_CHECK_T(ConfigError, world >= 1 && global_batch > 0 && global_batch % world == 0, "the batch size ",
                global_batch, " is the global batch and must be divisible by the number of ranks (", world,
                "): each rank trains on batch / ranks images per step");
    return global_batch / world;
}

DataParallelTrainer::DataParallelTrainer(Method& m, std::shared_ptr<dist::Communicator> comm, int64_t global_batch)
    : comm_(std::move(comm)) {
    SSL_CHECK(comm_ != nullptr, "DataParallelTrainer: the communicator is null");
    local_batch_ = local_batch_of(global_batch, comm_->world());
    if (comm_->world() == 1) return;
    attach_data_parallel(m, comm_);
    dp_ = std::make_unique<dist::DataParallel>(m, comm_);
}

DataParallelTrainer::~DataParallelTrainer() = default;

void DataParallelTrainer::broadcast_state() {
    if (dp_) dp_->broadcast_parameters();
}

void DataParallelTrainer::synchronize_gradients() {
    if (dp_) dp_->synchronize_gradients();
}

double DataParallelTrainer::global_loss(double loss) {
    if (comm_->world() == 1) return loss;
    Tensor t = from_vector<double>({loss}, {1});
    comm_->all_reduce(t, dist::ReduceOp::mean);
    return t.item();
}

std::pair<double, bool> DataParallelTrainer::step_consensus(double loss, bool stop) {
    if (comm_->world() == 1) return {loss, stop};
    Tensor t = from_vector<double>({loss, stop ? 1.0 : 0.0}, {2});
    comm_->all_reduce(t, dist::ReduceOp::sum);
    const std::vector<double> v = t.to_vector<double>();
    return {v[0] / comm_->world(), v[1] > 0};
}

bool DataParallelTrainer::any_rank(bool flag) {
    if (comm_->world() == 1) return flag;
    Tensor t = from_vector<int64_t>({flag ? 1 : 0}, {1});
    comm_->all_reduce(t, dist::ReduceOp::sum);
    return t.item() > 0;
}

void DataParallelTrainer::check_agree(int64_t value, const std::string& what) {
    if (comm_->world() == 1) return;
    Tensor mine = from_vector<int64_t>({value}, {1}), all;
    comm_->all_gather(mine, all);
    const std::vector<int64_t> v = all.to_vector<int64_t>();
    for (int r = 1; r < comm_->world(); ++r)
        SSL_CHECK(v[static_cast<size_t>(r)] == v[0], what, " differs between ranks: rank 0 has ", v[0], ", rank ", r,
                  " has ", v[static_cast<size_t>(r)], " (every rank must read the same files: a shared folder)");
}

Tensor DataParallelTrainer::gather_shards(const Tensor& rows, int64_t total) {
    return comm_->world() == 1 ? rows : dist::all_gather_shards(*comm_, rows, total);
}

}  // namespace sslight::ssl
