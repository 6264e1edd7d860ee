// Collective communication across data-parallel ranks (one process per GPU, launched by mpirun or srun):
// all_reduce (sum, mean), all_gather, broadcast, barrier, with rank, world size and local rank. Backends: a
// single process (identity), MPI for CPU tensors (deterministic: every element is summed in rank order, so the
// result is identical on all ranks and independent of how a buffer is split), NCCL for CUDA tensors (the NCCL
// communicator carries CUDA tensors and its MPI bootstrap carries CPU ones). Collectives are not differentiable
// and record nothing; every collective of the MPI and NCCL backends has a timeout (collective_timeout_s()).
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "engine/tensor.h"

namespace sslight::dist {

enum class ReduceOp { sum, mean };  // mean on integer tensors truncates toward zero
enum class Backend { automatic, single, mpi, nccl };

// A collective started by all_reduce_async. test() advances it without blocking and says whether it has finished;
// wait() blocks until it has (against the collective timeout), after which the tensor holds the result (for CUDA
// tensors: for work queued on the compute stream after wait() returns).
class Work {
public:
    virtual ~Work() = default;
    virtual bool test() = 0;
    virtual void wait() = 0;
};

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual const char* backend_name() const = 0;  // "single", "mpi", "nccl"
    virtual int rank() const = 0;
    virtual int world() const = 0;
    virtual int local_rank() const = 0;  // rank among the processes of this node (picks the GPU)

    // In place on every rank; t: contiguous, the same shape and dtype on every rank (f32, f64, i32, i64 on the
    // CPU; f32, f64, bf16, i32, i64 on CUDA with NCCL).
    virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
    // in: [n, ...] on every rank -> out: [world · n, ...], rank r's rows at [r·n, (r+1)·n). An undefined out is
    // allocated; a defined one must have that shape, in's dtype and device.
    virtual void all_gather(const Tensor& in, Tensor& out) = 0;
    // Copies root's t into every rank's t (same shape and dtype everywhere).
    virtual void broadcast(Tensor& t, int root = 0) = 0;
    virtual void barrier() = 0;

    // Starts all_reduce(t, op) and returns at once; t must stay alive and untouched until the Work has finished.
    // Asynchronous all-reduces travel on a channel of their own (MPI: a duplicate communicator progressed by
    // test()/wait(); NCCL: a second communicator on a communication stream that waits for the compute stream with an
    // event), so blocking collectives may run while they are in flight (synchronised BatchNorm during backward).
    // Among themselves they must be started in the same order on every rank; they finish in that order. The MPI
    // result is bit-identical to all_reduce's. Default (single process): runs all_reduce and returns a finished Work.
    virtual std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::sum);
};

// The device of this rank for a run configured on `requested`: a CUDA request becomes GPU local_rank mod the
// visible GPUs (the GPU the NCCL backend binds); a CPU request stays on the CPU.
Device rank_device(const Communicator& comm, Device requested);

// Contiguous shard [lo, hi) of n items for `rank` of `world`: ceil(n / world) items per rank, the last ranks fewer
// or none. Work split this way (kNN feature extraction) is put back together by all_gather_shards.
std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world);
// rows: this rank's shard_range(total, ...) rows, [hi - lo, D] (any D, the same on every rank that has rows; an
// empty shard may pass any [0, ...] tensor) -> all `total` rows [total, D] in order, on every rank.
Tensor all_gather_shards(Communicator& comm, const Tensor& rows, int64_t total);

// automatic: MPI (NCCL when built with it and a GPU is usable) when the launcher says world > 1, else single.
// mpi / nccl throw ConfigError when the build lacks them. Every call returns a new communicator; MPI itself is
// initialised once per process (and finalised at exit).
std::shared_ptr<Communicator> make_communicator(Backend backend = Backend::automatic);
Backend parse_backend(const std::string& text);  // "auto", "single", "mpi", "nccl"; ConfigError otherwise

bool mpi_built();   // compiled with SSLIGHT_WITH_MPI
bool nccl_built();  // compiled with SSLIGHT_WITH_NCCL (and MPI, its bootstrap)

// Launcher environment, read before MPI starts (Open MPI, MPICH/Intel MPI/PMI, Slurm srun), 0 / 1 when absent:
//   world: OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_STEP_NUM_TASKS (then SLURM_NTASKS under srun)
//   rank:  OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID
//   local: OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID
int launcher_world_size();
int launcher_rank();
int launcher_local_rank();

// SSLIGHT_COLLECTIVE_TIMEOUT_S (seconds, > 0), default 300. A collective that has not completed by then stops
// the job (MPI_Abort) with a message naming the collective, its sequence number and the ranks that never
// arrived at it.
double collective_timeout_s();

namespace detail {
// Implemented in mpi_comm.cpp / nccl_comm.cpp (only when built with them).
std::shared_ptr<Communicator> make_mpi_communicator();
std::shared_ptr<Communicator> make_nccl_communicator();
int env_int(const char* name, int fallback);  // fallback when unset or not an integer
}  // namespace detail

}  // namespace sslight::dist
