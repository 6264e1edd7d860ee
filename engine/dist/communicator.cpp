// The single-process communicator (world 1: all_reduce and broadcast are the identity, all_gather a copy), the
// default all_reduce_async (blocking, then a finished Work), shard helpers, the launcher environment helpers and the
// backend factory (DESIGN.md §4). Collectives record no gradient.
#include "engine/dist/communicator.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "engine/device.h"

namespace sslight::dist {

namespace detail {
int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    char* end = nullptr;
    errno = 0;
    long x = std::strtol(v, &end, 10);
    if (errno != 0 || *end != '\0') return fallback;
    return static_cast<int>(x);
}

#ifndef SSLIGHT_WITH_MPI
std::shared_ptr<Communicator> make_mpi_communicator() {
    SSL_CHECK_T(ConfigError, false, "the MPI backend was requested but sslight was built without MPI "
                "(install libopenmpi-dev with scripts/install_deps.sh and reconfigure)");
    return nullptr;
}
#endif
#if !defined(SSLIGHT_WITH_NCCL) || !defined(SSLIGHT_WITH_MPI)
std::shared_ptr<Communicator> make_nccl_communicator() {
    SSL_CHECK_T(ConfigError, false, "the NCCL backend was requested but sslight was built without NCCL "
                "(needs the CUDA toolkit's NCCL, SSLIGHT_NCCL=ON and MPI)");
    return nullptr;
}
#endif
}  // namespace detail

namespace {

class FinishedWork : public Work {
public:
    bool test() override { return true; }
    void wait() override {}
};

class SingleCommunicator : public Communicator {
public:
    const char* backend_name() const override { return "single"; }
    int rank() const override { return 0; }
    int world() const override { return 1; }
    int local_rank() const override { return 0; }
    void all_reduce(Tensor& t, ReduceOp) override { check_defined("all_reduce", t, "tensor"); }
    void all_gather(const Tensor& in, Tensor& out) override {
        check_defined("all_gather", in, "input");
        if (!out.defined()) out = empty(in.shape(), in.dtype(), in.device());
        SSL_CHECK_SHAPE(out.shape() == in.shape() && out.dtype() == in.dtype() && out.device() == in.device(),
                        "all_gather: out is ", out.str(), ", expected the input's ", in.str(), " (world 1)");
        if (!out.same(in) && out.raw_data() != in.raw_data())
            runtime::copy(out.raw_data(), out.device(), in.raw_data(), in.device(), in.nbytes());
    }
    void broadcast(Tensor& t, int root) override {
        check_defined("broadcast", t, "tensor");
        SSL_CHECK(root == 0, "broadcast: root ", root, " outside a world of 1 rank");
    }
    void barrier() override {}
};

int first_env(std::initializer_list<const char*> names, int fallback) {
    for (const char* n : names) {
        int v = detail::env_int(n, -1);
        if (v >= 0) return v;
    }
    return fallback;
}

}  // namespace

std::shared_ptr<Work> Communicator::all_reduce_async(Tensor& t, ReduceOp op) {
    all_reduce(t, op);
    return std::make_shared<FinishedWork>();
}

Device rank_device(const Communicator& comm, Device requested) {
    if (!requested.is_cuda()) return requested;
    const int count = runtime::cuda_device_count();
    SSL_CHECK_DEVICE(count > 0, "rank ", comm.rank(), ": the run asks for ", requested.str(), " but no GPU is usable: ",
                     runtime::cuda_unavailable_reason());
    return comm.world() > 1 ? Device::cuda(comm.local_rank() % count) : requested;
}

std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world) {
    SSL_CHECK(world >= 1 && rank >= 0 && rank < world && n >= 0, "shard_range: rank ", rank, " of world ", world,
              " over ", n, " items");
    const int64_t per = (n + world - 1) / world;
    return {std::min(n, rank * per), std::min(n, (rank + 1) * per)};
}

Tensor all_gather_shards(Communicator& comm, const Tensor& rows, int64_t total) {
    const auto [lo, hi] = shard_range(total, comm.rank(), comm.world());
    const int64_t per = (total + comm.world() - 1) / comm.world();
    SSL_CHECK_SHAPE(rows.defined() && rows.dim() == 2 && rows.size(0) == hi - lo, "all_gather_shards: rank ",
                    comm.rank(), " holds rows [", lo, ", ", hi, ") of ", total, ", expected a [", hi - lo,
                    ", D] tensor, got ", rows.defined() ? rows.str() : std::string("an undefined tensor"));
    // The width D from the ranks that have rows (an empty shard may not know it).
    Tensor width = from_vector<int64_t>({hi > lo ? rows.size(1) : 0}, {1}), widths;
    comm.all_gather(width, widths);
    std::vector<int64_t> ws = widths.to_vector<int64_t>();
    const int64_t D = *std::max_element(ws.begin(), ws.end());
    for (int64_t w : ws)
        SSL_CHECK_SHAPE(w == 0 || w == D, "all_gather_shards: the ranks' rows have different widths (", w, " and ",
                        D, ")");
    Tensor padded = zeros({per, D}, rows.dtype(), rows.device()), all;
    if (hi > lo) runtime::copy(padded.raw_data(), padded.device(), rows.raw_data(), rows.device(),
                               rows.nbytes());
    comm.all_gather(padded, all);
    return all.slice(0, total);  // every shard before the last nonempty one is full
}

bool mpi_built() {
#ifdef SSLIGHT_WITH_MPI
    return true;
#else
    return false;
#endif
}

bool nccl_built() {
#if defined(SSLIGHT_WITH_NCCL) && defined(SSLIGHT_WITH_MPI)
    return true;
#else
    return false;
#endif
}

int launcher_world_size() {
    int w = first_env({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}, -1);
    if (w < 0 && std::getenv("SLURM_STEP_ID") != nullptr) w = first_env({"SLURM_NTASKS"}, -1);
    return w > 0 ? w : 1;
}

int launcher_rank() { return first_env({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}, 0); }

int launcher_local_rank() {
    return first_env({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0);
}

double collective_timeout_s() {
    const char* v = std::getenv("SSLIGHT_COLLECTIVE_TIMEOUT_S");
    if (v == nullptr || *v == '\0') return 300.0;
    char* end = nullptr;
    double s = std::strtod(v, &end);
    SSL_CHECK_T(ConfigError, end != v && *end == '\0' && s > 0,
                "SSLIGHT_COLLECTIVE_TIMEOUT_S is '", v, "', expected a positive number of seconds");
    return s;
}

Backend parse_backend(const std::string& text) {
    if (text == "auto") return Backend::automatic;
    if (text == "single") return Backend::single;
    if (text == "mpi") return Backend::mpi;
    if (text == "nccl") return Backend::nccl;
    SSL_CHECK_T(ConfigError, false, "communication backend '", text, "': expected auto, single, mpi or nccl");
    return Backend::single;
}

std::shared_ptr<Communicator> make_communicator(Backend backend) {
    if (backend == Backend::automatic) {
        if (launcher_world_size() <= 1) return std::make_shared<SingleCommunicator>();
        SSL_CHECK_T(ConfigError, mpi_built(), "launched as ", launcher_world_size(),
                    " ranks (mpirun/srun) but sslight was built without MPI: every rank would train alone");
        backend = nccl_built() && runtime::cuda_device_count() > 0 ? Backend::nccl : Backend::mpi;
    }
    switch (backend) {
        case Backend::single: return std::make_shared<SingleCommunicator>();
        case Backend::mpi: return detail::make_mpi_communicator();
        case Backend::nccl: return detail::make_nccl_communicator();
        default: break;
    }
    SSL_FAIL("make_communicator: unknown backend");
}

}  // namespace sslight::dist
