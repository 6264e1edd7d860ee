// NCCL backend: one NCCL communicator per process on GPU local_rank % device_count, bootstrapped by broadcasting
// rank 0's ncclUniqueId over MPI. CUDA tensors go through NCCL on a dedicated communication stream ordered with
// events (compute -> comm before the collective, comm -> compute after it); CPU tensors go through the MPI
// communicator it was bootstrapped from. The host polls the collective's completion event against the collective
// timeout (arrivals are tracked on the MPI side channel), so a stalled rank stops the job with the same message.
// Sums are NCCL's (ring/tree order depends on the size: bucket-size independence holds within rounding here).
// all_reduce_async runs on a second NCCL communicator and stream, so it may interleave with blocking collectives
// (synchronised BatchNorm during backward) without the two call orders having to match across ranks.
#if defined(SSLIGHT_WITH_NCCL) && defined(SSLIGHT_WITH_MPI)
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "engine/cuda_check.h"
#include "engine/device.h"
#include "engine/dist/mpi_comm.h"

namespace sslight::dist::detail {

namespace {
ncclDataType_t nccl_type(DType t) {
    switch (t) {
        case DType::f32: return ncclFloat32;
        case DType::f64: return ncclFloat64;
        case DType::bf16: return ncclBfloat16;
        case DType::i32: return ncclInt32;
        case DType::i64: return ncclInt64;
        case DType::u8: return ncclUint8;
    }
    return ncclUint8;
}
}  // namespace

// all_reduce_async's Work: the completion event of the collective on the asynchronous stream. wait() orders the
// compute stream after it and polls it on the host against the collective timeout (the MPI side channel's ticket).
class NcclWork : public Work {
public:
    NcclWork(std::shared_ptr<MpiCommunicator> mpi, const Ticket& ticket, cudaEvent_t done, cudaStream_t compute,
             ncclComm_t comm)
        : mpi_(std::move(mpi)), ticket_(ticket), done_(done), compute_(compute), comm_(comm) {}
    ~NcclWork() override { cudaEventDestroy(done_); }
    bool test() override {
        ncclResult_t async = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
        SSL_CHECK_T(LibraryError, async == ncclSuccess || async == ncclInProgress,
                    "NCCL all_reduce_async failed asynchronously: ", ncclGetErrorString(async));
        const cudaError_t q = cudaEventQuery(done_);
        if (q == cudaErrorNotReady) return false;
        CUDA_CHECK(q);
        return true;
    }
    void wait() override {
        CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
        mpi_->restart_clock(ticket_);
        mpi_->wait(ticket_, [&] { return test(); }, [&] { ncclCommAbort(comm_); });
    }

private:
    std::shared_ptr<MpiCommunicator> mpi_;
    Ticket ticket_;
    cudaEvent_t done_;
    cudaStream_t compute_;
    ncclComm_t comm_;
};

class NcclCommunicator : public Communicator {
public:
    NcclCommunicator() : mpi_(std::make_shared<MpiCommunicator>()) {
        int count = runtime::cuda_device_count();
        SSL_CHECK_DEVICE(count > 0, "the NCCL backend needs a usable GPU: ", runtime::cuda_unavailable_reason());
        device_ = mpi_->local_rank() % count;
        CUDA_CHECK(cudaSetDevice(device_));
        nccl_ = init_comm();
        async_nccl_ = init_comm();
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        CUDA_CHECK(cudaStreamCreateWithFlags(&async_stream_, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    }
    ~NcclCommunicator() override {
        if (async_nccl_ != nullptr) ncclCommDestroy(async_nccl_);
        if (nccl_ != nullptr) ncclCommDestroy(nccl_);
        if (done_ != nullptr) cudaEventDestroy(done_);
        if (ready_ != nullptr) cudaEventDestroy(ready_);
        if (async_stream_ != nullptr) cudaStreamDestroy(async_stream_);
        if (stream_ != nullptr) cudaStreamDestroy(stream_);
    }

    const char* backend_name() const override { return "nccl"; }
    int rank() const override { return mpi_->rank(); }
    int world() const override { return mpi_->world(); }
    int local_rank() const override { return mpi_->local_rank(); }

    void all_reduce(Tensor& t, ReduceOp op) override {
        if (on_host(t, "all_reduce")) return mpi_->all_reduce(t, op);
        run(CollectiveKind::all_reduce, t.device(), [&] {
            return ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                 op == ReduceOp::mean ? ncclAvg : ncclSum, nccl_, stream_);
        });
    }
    void all_gather(const Tensor& in, Tensor& out) override {
        if (on_host(in, "all_gather")) return mpi_->all_gather(in, out);
        Shape shape = in.shape();
        SSL_CHECK_SHAPE(!shape.empty(), "all_gather: the input needs a leading dimension, got ", in.str());
        shape[0] *= world();
        if (!out.defined()) out = empty(shape, in.dtype(), in.device());
        SSL_CHECK_SHAPE(out.shape() == shape && out.dtype() == in.dtype() && out.device() == in.device(),
                        "all_gather: out is ", out.str(), ", expected shape ", shape_str(shape), " on ", in.device().str());
        run(CollectiveKind::all_gather, in.device(), [&] {
            return ncclAllGather(in.raw_data(), out.raw_data(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()),
                                 nccl_, stream_);
        });
    }
    void broadcast(Tensor& t, int root) override {
        if (on_host(t, "broadcast")) return mpi_->broadcast(t, root);
        SSL_CHECK(root >= 0 && root < world(), "broadcast: root ", root, " outside a world of ", world(), " ranks");
        run(CollectiveKind::broadcast, t.device(), [&] {
            return ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                                 nccl_, stream_);
        });
    }
    void barrier() override { mpi_->barrier(); }

    std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
        if (on_host(t, "all_reduce_async")) return mpi_->all_reduce_async(t, op);
        auto compute = reinterpret_cast<cudaStream_t>(runtime::stream(t.device()));
        const Ticket ticket = mpi_->begin(CollectiveKind::all_reduce_async);
        cudaEvent_t done = nullptr;
        CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventRecord(ready_, compute));
        CUDA_CHECK(cudaStreamWaitEvent(async_stream_, ready_, 0));
        NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                 op == ReduceOp::mean ? ncclAvg : ncclSum, async_nccl_, async_stream_));
        CUDA_CHECK(cudaEventRecord(done, async_stream_));
        return std::make_shared<NcclWork>(mpi_, ticket, done, compute, async_nccl_);
    }

private:
    // One NCCL communicator over the MPI world: rank 0's unique id broadcast over MPI.
    ncclComm_t init_comm() {
        ncclUniqueId id;
        if (mpi_->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
        Tensor id_bytes = empty({static_cast<int64_t>(sizeof(id))}, DType::u8);
        std::memcpy(id_bytes.raw_data(), &id, sizeof(id));
        mpi_->broadcast(id_bytes, 0);
        std::memcpy(&id, id_bytes.raw_data(), sizeof(id));
        ncclComm_t comm = nullptr;
        NCCL_CHECK(ncclCommInitRank(&comm, mpi_->world(), id, mpi_->rank()));
        return comm;
    }

    // True for CPU tensors (carried by MPI); CUDA tensors must live on this rank's GPU.
    bool on_host(const Tensor& t, const char* op) const {
        check_defined(op, t, "tensor");
        if (t.device().is_cpu()) return true;
        SSL_CHECK_DEVICE(t.device().index == device_, op, ": ", t.str(), " is not on this rank's GPU cuda:", device_);
        return false;
    }

    // Orders the comm stream after the compute stream, enqueues `launch`, orders the compute stream after it and
    // waits (host) for completion against the collective timeout.
    template <class Launch>
    void run(CollectiveKind kind, Device d, Launch&& launch) {
        auto compute = reinterpret_cast<cudaStream_t>(runtime::stream(d));
        const Ticket ticket = mpi_->begin(kind);
        CUDA_CHECK(cudaEventRecord(ready_, compute));
        CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
        NCCL_CHECK(launch());
        CUDA_CHECK(cudaEventRecord(done_, stream_));
        CUDA_CHECK(cudaStreamWaitEvent(compute, done_, 0));
        mpi_->wait(
            ticket,
            [&] {
                ncclResult_t async = ncclSuccess;
                NCCL_CHECK(ncclCommGetAsyncError(nccl_, &async));
                SSL_CHECK_T(LibraryError, async == ncclSuccess || async == ncclInProgress, "NCCL ", kind_name(kind),
                            " failed asynchronously: ", ncclGetErrorString(async));
                cudaError_t q = cudaEventQuery(done_);
                if (q == cudaErrorNotReady) return false;
                CUDA_CHECK(q);
                return true;
            },
            [&] { ncclCommAbort(nccl_), nccl_ = nullptr; });
    }

    std::shared_ptr<MpiCommunicator> mpi_;
    int device_ = 0;
    ncclComm_t nccl_ = nullptr, async_nccl_ = nullptr;
    cudaStream_t stream_ = nullptr, async_stream_ = nullptr;
    cudaEvent_t ready_ = nullptr, done_ = nullptr;
};

std::shared_ptr<Communicator> make_nccl_communicator() { return std::make_shared<NcclCommunicator>(); }

}  // namespace sslight::dist::detail
#endif  // SSLIGHT_WITH_NCCL && SSLIGHT_WITH_MPI
