// The MPI communicator (internal: included by mpi_comm.cpp and nccl_comm.cpp only, in builds with MPI). CPU
// tensors; every collective is nonblocking MPI polled against a deadline. Arrival side channel: on entering
// collective #n every rank but 0 posts a nonblocking (n, kind) message to rank 0, which drains them while it
// waits; at the deadline rank 0 names the ranks whose last arrival is older than n and calls MPI_Abort. Other
// ranks wait a grace period longer (so rank 0 reports first) and then abort with their own message.
#pragma once
#ifdef SSLIGHT_WITH_MPI
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "engine/dist/communicator.h"

#define MPI_CHECK(call) \
    SSL_LIB_CHECK_GEN("MPI", call, int, ssl_status_ == MPI_SUCCESS, ::sslight::dist::detail::mpi_error_text(ssl_status_))

namespace sslight::dist::detail {

std::string mpi_error_text(int code);
void ensure_mpi_initialized();  // MPI_Init_thread once (FUNNELED), MPI_Finalize registered with atexit

// The kinds of collective named in timeout messages (the arrival messages carry the index).
enum class CollectiveKind : int64_t { all_reduce, all_gather, broadcast, barrier, setup };
const char* kind_name(CollectiveKind k);

class MpiCommunicator : public Communicator {
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

    // For the NCCL backend: open collective number n (posts the arrival, sets the deadline), then poll `done`
    // until it returns true; on timeout call `before_abort` (may be empty), report and MPI_Abort.
    void begin(CollectiveKind kind);
    void wait(const std::function<bool()>& done, const std::function<void()>& before_abort = {});
    MPI_Comm comm() const { return comm_; }

private:
    struct PendingSend {
        MPI_Request request = MPI_REQUEST_NULL;
        int64_t message[2] = {0, 0};  // (sequence number, kind)
    };
    void wait_requests(std::vector<MPI_Request>& requests);
    void drain_arrivals();  // rank 0: receive every arrival message that is there
    void purge_sends();     // other ranks: forget completed arrival sends
    [[noreturn]] void on_timeout();
    template <class T>
    void sum_in_rank_order(T* data, int64_t n);

    MPI_Comm comm_ = MPI_COMM_NULL;     // the collectives
    MPI_Comm arrive_ = MPI_COMM_NULL;   // the arrival side channel
    int rank_ = 0, world_ = 1, local_rank_ = 0;
    double timeout_s_ = 300;
    int64_t seq_ = 0;
    CollectiveKind kind_ = CollectiveKind::setup;
    std::chrono::steady_clock::time_point start_, deadline_;
    std::deque<PendingSend> sends_;
    std::vector<int64_t> last_seq_, last_kind_;  // rank 0: the latest arrival of every rank
    std::vector<char> scratch_;
};

}  // namespace sslight::dist::detail
#endif
