// The MPI communicator (internal: included by mpi_comm.cpp and nccl_comm.cpp only, in builds with MPI). CPU
// tensors; every collective is nonblocking MPI polled against a deadline. Arrival side channel: on entering
// collective #n every rank but 0 posts a nonblocking (n, kind) message to rank 0, which drains them while it
// waits; at the deadline rank 0 names the ranks whose last arrival is older than n and calls MPI_Abort. Other
// ranks wait a grace period longer (so rank 0 reports first) and then abort with their own message. Asynchronous
// all-reduces run on a duplicate communicator with their own sequence numbers (all_reduce_async #n).
#pragma once
#ifdef SSLIGHT_WITH_MPI
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "engine/dist/communicator.h"

#define MPI_CHECK(call) \
    SSL_LIB_CHECK_GEN("MPI", call, int, ssl_status_ == MPI_SUCCESS, ::sslight::dist::detail::mpi_error_text(ssl_status_))

namespace sslight::dist::detail {

std::string mpi_error_text(int code);
void ensure_mpi_initialized();  // MPI_Init_thread once (FUNNELED), MPI_Finalize registered with atexit

// The kinds of collective named in timeout messages (the arrival messages carry the index).
enum class CollectiveKind : int64_t { all_reduce, all_gather, broadcast, barrier, setup, all_reduce_async };
const char* kind_name(CollectiveKind k);

class RankOrderAllReduce;  // mpi_comm.cpp: one all_reduce as a resumable state machine

// One opened collective: its kind, sequence number (per channel: blocking or asynchronous) and deadline.
struct Ticket {
    CollectiveKind kind = CollectiveKind::setup;
    int64_t seq = 0;
    std::chrono::steady_clock::time_point start, deadline;
};

class MpiCommunicator : public Communicator, public std::enable_shared_from_this<MpiCommunicator> {
public:
    MpiCommunicator();
    ~MpiCommunicator() override;

    const char* backend_name() const override { return "mpi"; }
    int rank() const override { return rank_; }
    int world() const override { return world_; }
    int local_rank() const override { return local_rank_; }
    void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) override;
    void all_gather(const Tensor& in, Tensor& out) override;
    void broadcast(Tensor& t, int root = 0) override;
    void barrier() override;
    std::shared_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::sum) override;

    // Opens collective number n of the blocking channel (kind != all_reduce_async) or of the asynchronous one:
    // posts the arrival and sets the deadline. wait() polls `done` until it returns true; on timeout it calls
    // `before_abort` (may be empty), reports and MPI_Abort. Used by the NCCL backend too.
    Ticket begin(CollectiveKind kind);
    void wait(const Ticket& ticket, const std::function<bool()>& done, const std::function<void()>& before_abort = {});
    void restart_clock(Ticket& ticket) const;  // the deadline from now (an asynchronous collective's wait starts)
    // Advances the queue of asynchronous all-reduces: one at a time, in the order they were started, so every rank
    // initiates the same sequence of MPI collectives on the asynchronous communicator.
    void progress_async();
    MPI_Comm comm() const { return comm_; }
    MPI_Comm async_comm() const { return async_comm_; }

private:
    struct PendingSend {
        MPI_Request request = MPI_REQUEST_NULL;
        int64_t message[2] = {0, 0};  // (sequence number, kind)
    };
    void wait_request(const Ticket& ticket, MPI_Request& req);
    void drain_arrivals();  // rank 0: receive every arrival message that is there
    void purge_sends();     // other ranks: forget completed arrival sends
    [[noreturn]] void on_timeout(const Ticket& ticket);

    MPI_Comm comm_ = MPI_COMM_NULL;        // the blocking collectives
    MPI_Comm async_comm_ = MPI_COMM_NULL;  // all_reduce_async, ordered among themselves
    MPI_Comm arrive_ = MPI_COMM_NULL;      // the arrival side channel
    int rank_ = 0, world_ = 1, local_rank_ = 0;
    double timeout_s_ = 300;
    int64_t seq_ = 0, async_seq_ = 0;
    std::deque<PendingSend> sends_;
    std::deque<std::shared_ptr<RankOrderAllReduce>> async_queue_;
    // rank 0: the latest arrival of every rank on the blocking channel (number, kind) and on the asynchronous one
    std::vector<int64_t> last_seq_, last_kind_, last_async_seq_;
};

}  // namespace sslight::dist::detail
#endif
