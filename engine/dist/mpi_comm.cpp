// MPI backend of the communicator (CPU tensors: f32, f64, i32, i64 reductions; any dtype for gather/broadcast).
// all_reduce is a deterministic reduce-scatter + all-gather: rank j receives every rank's j-th slice
// (MPI_Ialltoallv), sums it in rank order 0..world-1 and the slices are all-gathered (MPI_Iallgatherv), so
// each element is ((x0 + x1) + x2) + ... on every rank whatever the buffer's length or split (2(w-1)/w · n
// traffic per rank, like a ring). Every step is nonblocking and polled against the collective timeout; the same
// resumable state machine serves all_reduce (polled to the end) and all_reduce_async (advanced by test()/wait()).
#ifdef SSLIGHT_WITH_MPI
#include "engine/dist/mpi_comm.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace sslight::dist::detail {

namespace {
constexpr int kArriveTag = 7301;
constexpr int64_t kMaxChunk = int64_t(1) << 30;  // elements or bytes per MPI call (counts are int)

void finalize_at_exit() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

MPI_Datatype mpi_type(DType t) {
    switch (t) {
        case DType::f32: return MPI_FLOAT;
        case DType::f64: return MPI_DOUBLE;
        case DType::i32: return MPI_INT32_T;
        case DType::i64: return MPI_INT64_T;
        default: break;
    }
    SSL_CHECK_DTYPE(false, "MPI all_reduce: dtype ", dtype_name(t), " is not reducible (f32, f64, i32, i64)");
    return MPI_DATATYPE_NULL;
}

void check_cpu(const char* op, const Tensor& t) {
    check_defined(op, t, "tensor");
    SSL_CHECK_DEVICE(t.device().is_cpu(), op, ": the MPI backend carries CPU tensors, got ", t.str(),
                     " (use the nccl backend for CUDA tensors)");
}

// Calls f(T*) with t's data for the reducible dtypes.
template <class F>
void on_reducible(Tensor& t, F&& f) {
    switch (t.dtype()) {
        case DType::f32: f(t.data<float>()); break;
        case DType::f64: f(t.data<double>()); break;
        case DType::i32: f(t.data<int32_t>()); break;
        default: f(t.data<int64_t>()); break;
    }
}

}  // namespace

// all_reduce of one CPU tensor as a resumable state machine on one communicator: per chunk of at most kMaxChunk
// elements the slices go to their owners (MPI_Ialltoallv), each rank sums its slice in rank order and the sums are
// all-gathered (MPI_Iallgatherv); then the mean's division. advance() posts and tests without blocking.
class RankOrderAllReduce {
public:
    RankOrderAllReduce(const Tensor& t, ReduceOp op, MPI_Comm comm, int rank, int world)
        : t_(t), op_(op), comm_(comm), rank_(rank), world_(world), n_(t.numel()), type_(mpi_type(t.dtype())),
          es_(static_cast<int64_t>(dtype_size(t.dtype()))) {}
    ~RankOrderAllReduce() {
        // MPI forbids freeing the request of a pending collective: on an error path (a Work dropped unfinished) the
        // buffers it may still write to are deliberately left allocated.
        if (req_ == MPI_REQUEST_NULL) return;
        new Tensor(t_);
        new std::vector<char>(std::move(scratch_));
    }
    RankOrderAllReduce(const RankOrderAllReduce&) = delete;
    RankOrderAllReduce& operator=(const RankOrderAllReduce&) = delete;

    bool finished() const { return stage_ == Stage::done; }

    // True once t holds the result.
    bool advance() {
        for (;;) {
            switch (stage_) {
                case Stage::post:
                    if (world_ == 1 || off_ >= n_) return finish();
                    post_scatter();
                    break;
                case Stage::scatter:
                    if (!complete()) return false;
                    on_reducible(t_, [&](auto* p) { sum_slice(p + off_); });
                    post_gather();
                    break;
                case Stage::gather:
                    if (!complete()) return false;
                    off_ += chunk_, stage_ = Stage::post;
                    break;
                case Stage::done: return true;
            }
        }
    }

private:
    enum class Stage { post, scatter, gather, done };

    bool complete() {
        int flag = 0;
        MPI_CHECK(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
        return flag != 0;
    }
    void post_scatter() {
        chunk_ = std::min(kMaxChunk, n_ - off_);
        counts_.assign(static_cast<size_t>(world_), 0), displs_ = counts_, rcounts_ = counts_, rdispls_ = counts_;
        for (int j = 0; j < world_; ++j) {
            counts_[j] = static_cast<int>(chunk_ / world_ + (j < chunk_ % world_ ? 1 : 0));
            displs_[j] = j == 0 ? 0 : displs_[j - 1] + counts_[j - 1];
        }
        const int mine = counts_[rank_];
        for (int i = 0; i < world_; ++i) rcounts_[i] = mine, rdispls_[i] = i * mine;
        scratch_.resize(static_cast<size_t>((int64_t(world_) * mine + 1) * es_));
        char* data = static_cast<char*>(t_.raw_data()) + off_ * es_;
        MPI_CHECK(MPI_Ialltoallv(data, counts_.data(), displs_.data(), type_, scratch_.data(), rcounts_.data(),
                                 rdispls_.data(), type_, comm_, &req_));
        stage_ = Stage::scatter;
    }
    template <class T>
    void sum_slice(T* chunk) {
        const int mine = counts_[rank_];
        const T* parts = reinterpret_cast<const T*>(scratch_.data());
        T* out = chunk + displs_[rank_];
        for (int k = 0; k < mine; ++k) {
            T acc = parts[k];
            for (int i = 1; i < world_; ++i) acc += parts[static_cast<size_t>(i) * mine + k];
            out[k] = acc;
        }
    }
    void post_gather() {
        char* data = static_cast<char*>(t_.raw_data()) + off_ * es_;
        MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, type_, data, counts_.data(), displs_.data(), type_, comm_, &req_));
        stage_ = Stage::gather;
    }
    bool finish() {
        if (op_ == ReduceOp::mean)
            on_reducible(t_, [&](auto* p) {
                using T = std::remove_pointer_t<decltype(p)>;
                for (int64_t i = 0; i < n_; ++i) p[i] = static_cast<T>(p[i] / static_cast<T>(world_));
            });
        stage_ = Stage::done;
        return true;
    }

    Tensor t_;  // keeps the storage alive while the collective runs
    ReduceOp op_;
    MPI_Comm comm_;
    int rank_, world_;
    int64_t n_, off_ = 0, chunk_ = 0;
    MPI_Datatype type_;
    int64_t es_;
    Stage stage_ = Stage::post;
    MPI_Request req_ = MPI_REQUEST_NULL;
    std::vector<int> counts_, displs_, rcounts_, rdispls_;
    std::vector<char> scratch_;
};

namespace {
// all_reduce_async's Work: its state machine in the communicator's queue, its ticket for the timeout.
class MpiAllReduceWork : public Work {
public:
    MpiAllReduceWork(std::shared_ptr<MpiCommunicator> comm, const Ticket& ticket,
                     std::shared_ptr<RankOrderAllReduce> reduce)
        : comm_(std::move(comm)), ticket_(ticket), reduce_(std::move(reduce)) {}
    bool test() override {
        if (!reduce_->finished()) comm_->progress_async();
        return reduce_->finished();
    }
    void wait() override {
        if (reduce_->finished()) return;
        comm_->restart_clock(ticket_);  // the deadline counts the time spent waiting, not the backward before it
        comm_->wait(ticket_, [&] { return test(); });
    }

private:
    std::shared_ptr<MpiCommunicator> comm_;
    Ticket ticket_;
    std::shared_ptr<RankOrderAllReduce> reduce_;
};
}  // namespace

std::string mpi_error_text(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
    return std::string(text, static_cast<size_t>(len));
}

void ensure_mpi_initialized() {
    int initialized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    if (initialized) return;
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit(finalize_at_exit);
}

const char* kind_name(CollectiveKind k) {
    switch (k) {
        case CollectiveKind::all_reduce: return "all_reduce";
        case CollectiveKind::all_gather: return "all_gather";
        case CollectiveKind::broadcast: return "broadcast";
        case CollectiveKind::barrier: return "barrier";
        case CollectiveKind::setup: return "setup";
        case CollectiveKind::all_reduce_async: return "all_reduce_async";
    }
    return "unknown";
}

MpiCommunicator::MpiCommunicator() {
    ensure_mpi_initialized();
    timeout_s_ = collective_timeout_s();
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &async_comm_));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &arrive_));
    for (MPI_Comm c : {comm_, async_comm_, arrive_}) MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &world_));
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    MPI_CHECK(MPI_Comm_free(&node));
    last_seq_.assign(static_cast<size_t>(world_), 0);
    last_async_seq_.assign(static_cast<size_t>(world_), 0);
    last_kind_.assign(static_cast<size_t>(world_), static_cast<int64_t>(CollectiveKind::setup));
}

MpiCommunicator::~MpiCommunicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (PendingSend& s : sends_)
        if (s.request != MPI_REQUEST_NULL) MPI_Request_free(&s.request);
    MPI_Comm_free(&arrive_);
    MPI_Comm_free(&async_comm_);
    MPI_Comm_free(&comm_);
}

void MpiCommunicator::restart_clock(Ticket& t) const {
    t.start = std::chrono::steady_clock::now();
    // Rank 0 reports first; the others give it a grace period to do so.
    const double limit = rank_ == 0 ? timeout_s_ : timeout_s_ + std::min(timeout_s_, 10.0);
    t.deadline = t.start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(limit));
}

Ticket MpiCommunicator::begin(CollectiveKind kind) {
    Ticket t;
    t.kind = kind;
    t.seq = kind == CollectiveKind::all_reduce_async ? ++async_seq_ : ++seq_;
    restart_clock(t);
    if (world_ == 1) return t;
    if (rank_ == 0) {
        drain_arrivals();
        return t;
    }
    purge_sends();
    sends_.emplace_back();
    PendingSend& s = sends_.back();
    s.message[0] = t.seq;
    s.message[1] = static_cast<int64_t>(kind);
    MPI_CHECK(MPI_Isend(s.message, 2, MPI_INT64_T, 0, kArriveTag, arrive_, &s.request));
    return t;
}

void MpiCommunicator::drain_arrivals() {
    for (;;) {
        int flag = 0;
        MPI_Status status;
        MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kArriveTag, arrive_, &flag, &status));
        if (!flag) return;
        int64_t msg[2];
        MPI_CHECK(MPI_Recv(msg, 2, MPI_INT64_T, status.MPI_SOURCE, kArriveTag, arrive_, MPI_STATUS_IGNORE));
        auto src = static_cast<size_t>(status.MPI_SOURCE);
        if (msg[1] == static_cast<int64_t>(CollectiveKind::all_reduce_async))
            last_async_seq_[src] = std::max(last_async_seq_[src], msg[0]);
        else if (msg[0] > last_seq_[src])
            last_seq_[src] = msg[0], last_kind_[src] = msg[1];
    }
}

void MpiCommunicator::purge_sends() {
    while (!sends_.empty()) {
        int flag = 0;
        MPI_CHECK(MPI_Test(&sends_.front().request, &flag, MPI_STATUS_IGNORE));
        if (!flag) return;
        sends_.pop_front();
    }
}

void MpiCommunicator::wait(const Ticket& ticket, const std::function<bool()>& done,
                           const std::function<void()>& before_abort) {
    int polls = 0;
    auto nap = std::chrono::microseconds(2);
    while (!done()) {
        if (rank_ == 0 && world_ > 1) drain_arrivals();
        if (std::chrono::steady_clock::now() > ticket.deadline) {
            if (before_abort) before_abort();
            on_timeout(ticket);
        }
        // Spin briefly, then back off (ranks may share cores).
        if (++polls > 100) {
            std::this_thread::sleep_for(nap);
            nap = std::min(nap * 2, std::chrono::microseconds(500));
        }
    }
}

void MpiCommunicator::on_timeout(const Ticket& ticket) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - ticket.start).count();
    std::string msg = str("sslight: collective ", kind_name(ticket.kind), " #", ticket.seq, " timed out on rank ",
                          rank_, " after ", waited, " s (SSLIGHT_COLLECTIVE_TIMEOUT_S=", timeout_s_, "): ");
    if (rank_ == 0) {
        drain_arrivals();
        const bool async = ticket.kind == CollectiveKind::all_reduce_async;
        std::string missing, seen;
        for (int r = 1; r < world_; ++r) {
            const auto i = static_cast<size_t>(r);
            const int64_t last = async ? last_async_seq_[i] : last_seq_[i];
            if (last >= ticket.seq) continue;
            missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            seen += async ? str("; rank ", r, " last arrived at all_reduce_async #", last)
                          : str("; rank ", r, " last arrived at #", last, " (",
                                kind_name(static_cast<CollectiveKind>(last_kind_[i])), ")");
        }
        if (missing.empty())
            msg += "every rank arrived but the collective did not complete (mismatched sizes or a network failure)";
        else
            msg += "ranks that did not arrive: " + missing + seen;
    } else {
        msg += "rank 0, which names the missing ranks, did not report in time (rank 0 itself may be the one stalled)";
    }
    std::fprintf(stderr, "%s\n", msg.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
    std::abort();
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
    check_cpu("all_reduce", t);
    mpi_type(t.dtype());  // validates the dtype before anyone waits
    const Ticket ticket = begin(CollectiveKind::all_reduce);
    RankOrderAllReduce reduce(t, op, comm_, rank_, world_);
    wait(ticket, [&] { return reduce.advance(); });
}

std::shared_ptr<Work> MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
    check_cpu("all_reduce_async", t);
    mpi_type(t.dtype());
    const Ticket ticket = begin(CollectiveKind::all_reduce_async);
    auto reduce = std::make_shared<RankOrderAllReduce>(t, op, async_comm_, rank_, world_);
    async_queue_.push_back(reduce);
    progress_async();  // posts its first step when nothing is ahead of it
    return std::make_shared<MpiAllReduceWork>(shared_from_this(), ticket, reduce);
}

void MpiCommunicator::progress_async() {
    while (!async_queue_.empty() && async_queue_.front()->advance()) async_queue_.pop_front();
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
    check_cpu("all_gather", in);
    Shape shape = in.shape();
    SSL_CHECK_SHAPE(!shape.empty(), "all_gather: the input needs a leading dimension, got ", in.str());
    shape[0] *= world_;
    if (!out.defined()) out = empty(shape, in.dtype(), in.device());
    SSL_CHECK_SHAPE(out.shape() == shape && out.dtype() == in.dtype() && out.device().is_cpu(),
                    "all_gather: out is ", out.str(), ", expected shape ", shape_str(shape), " and the input's dtype");
    SSL_CHECK(in.nbytes() <= static_cast<size_t>(INT_MAX), "all_gather: ", in.str(), " is over 2 GiB per rank");
    const Ticket ticket = begin(CollectiveKind::all_gather);
    MPI_Request req = MPI_REQUEST_NULL;
    const int bytes = static_cast<int>(in.nbytes());
    MPI_CHECK(MPI_Iallgather(in.raw_data(), bytes, MPI_BYTE, out.raw_data(), bytes, MPI_BYTE, comm_, &req));
    wait_request(ticket, req);
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
    check_cpu("broadcast", t);
    SSL_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " outside a world of ", world_, " ranks");
    const Ticket ticket = begin(CollectiveKind::broadcast);
    auto* p = static_cast<char*>(t.raw_data());
    const auto n = static_cast<int64_t>(t.nbytes());
    for (int64_t off = 0; off < n; off += kMaxChunk) {
        MPI_Request req = MPI_REQUEST_NULL;
        MPI_CHECK(MPI_Ibcast(p + off, static_cast<int>(std::min(kMaxChunk, n - off)), MPI_BYTE, root, comm_, &req));
        wait_request(ticket, req);
    }
}

void MpiCommunicator::barrier() {
    const Ticket ticket = begin(CollectiveKind::barrier);
    MPI_Request req = MPI_REQUEST_NULL;
    MPI_CHECK(MPI_Ibarrier(comm_, &req));
    wait_request(ticket, req);
}

void MpiCommunicator::wait_request(const Ticket& ticket, MPI_Request& req) {
    wait(ticket, [&] {
        int flag = 0;
        MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
        return flag != 0;
    });
}

std::shared_ptr<Communicator> make_mpi_communicator() { return std::make_shared<MpiCommunicator>(); }

}  // namespace sslight::dist::detail
#endif  // SSLIGHT_WITH_MPI
