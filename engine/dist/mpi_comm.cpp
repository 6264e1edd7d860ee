// MPI backend of the communicator (CPU tensors: f32, f64, i32, i64 reductions; any dtype for gather/broadcast).
// all_reduce is a deterministic reduce-scatter + all-gather: rank j receives every rank's j-th slice
// (MPI_Ialltoallv), sums it in rank order 0..world-1 and the slices are all-gathered (MPI_Iallgatherv), so
// each element is ((x0 + x1) + x2) + ... on every rank whatever the buffer's length or split (2(w-1)/w · n
// traffic per rank, like a ring). Every step is nonblocking and polled against the collective timeout.
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
    }
    return "unknown";
}

MpiCommunicator::MpiCommunicator() {
    ensure_mpi_initialized();
    timeout_s_ = collective_timeout_s();
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &arrive_));
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_set_errhandler(arrive_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &world_));
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    MPI_CHECK(MPI_Comm_free(&node));
    last_seq_.assign(static_cast<size_t>(world_), 0);
    last_kind_.assign(static_cast<size_t>(world_), static_cast<int64_t>(CollectiveKind::setup));
}

MpiCommunicator::~MpiCommunicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (PendingSend& s : sends_)
        if (s.request != MPI_REQUEST_NULL) MPI_Request_free(&s.request);
    MPI_Comm_free(&arrive_);
    MPI_Comm_free(&comm_);
}

void MpiCommunicator::begin(CollectiveKind kind) {
    ++seq_;
    kind_ = kind;
    start_ = std::chrono::steady_clock::now();
    // Rank 0 reports first; the others give it a grace period to do so.
    double limit = rank_ == 0 ? timeout_s_ : timeout_s_ + std::min(timeout_s_, 10.0);
    deadline_ = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(limit));
    if (world_ == 1) return;
    if (rank_ == 0) {
        drain_arrivals();
        return;
    }
    purge_sends();
    sends_.emplace_back();
    PendingSend& s = sends_.back();
    s.message[0] = seq_;
    s.message[1] = static_cast<int64_t>(kind);
    MPI_CHECK(MPI_Isend(s.message, 2, MPI_INT64_T, 0, kArriveTag, arrive_, &s.request));
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
        if (msg[0] > last_seq_[src]) last_seq_[src] = msg[0], last_kind_[src] = msg[1];
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

void MpiCommunicator::wait(const std::function<bool()>& done, const std::function<void()>& before_abort) {
    int polls = 0;
    auto nap = std::chrono::microseconds(2);
    while (!done()) {
        if (rank_ == 0 && world_ > 1) drain_arrivals();
        if (std::chrono::steady_clock::now() > deadline_) {
            if (before_abort) before_abort();
            on_timeout();
        }
        // Spin briefly, then back off (ranks may share cores).
        if (++polls > 100) {
            std::this_thread::sleep_for(nap);
            nap = std::min(nap * 2, std::chrono::microseconds(500));
        }
    }
}

void MpiCommunicator::wait_requests(std::vector<MPI_Request>& requests) {
    wait([&] {
        int flag = 0;
        MPI_CHECK(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag, MPI_STATUSES_IGNORE));
        return flag != 0;
    });
}

void MpiCommunicator::on_timeout() {
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string msg = str("sslight: collective ", kind_name(kind_), " #", seq_, " timed out on rank ", rank_,
                          " after ", waited, " s (SSLIGHT_COLLECTIVE_TIMEOUT_S=", timeout_s_, "): ");
    if (rank_ == 0) {
        drain_arrivals();
        std::string missing, seen;
        for (int r = 1; r < world_; ++r) {
            if (last_seq_[static_cast<size_t>(r)] >= seq_) continue;
            missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            seen += str("; rank ", r, " last arrived at #", last_seq_[static_cast<size_t>(r)], " (",
                        kind_name(static_cast<CollectiveKind>(last_kind_[static_cast<size_t>(r)])), ")");
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

template <class T>
void MpiCommunicator::sum_in_rank_order(T* data, int64_t n) {
    const int w = world_;
    std::vector<int> counts(w), displs(w), rcounts(w), rdispls(w);
    for (int j = 0; j < w; ++j) {
        counts[j] = static_cast<int>(n / w + (j < n % w ? 1 : 0));
        displs[j] = j == 0 ? 0 : displs[j - 1] + counts[j - 1];
    }
    const int mine = counts[rank_];
    for (int i = 0; i < w; ++i) rcounts[i] = mine, rdispls[i] = i * mine;
    scratch_.resize(static_cast<size_t>(w) * static_cast<size_t>(mine) * sizeof(T) + sizeof(T));
    T* parts = reinterpret_cast<T*>(scratch_.data());
    MPI_Datatype type = mpi_type(dtype_of<T>::value);
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    MPI_CHECK(MPI_Ialltoallv(data, counts.data(), displs.data(), type, parts, rcounts.data(), rdispls.data(), type,
                             comm_, &req[0]));
    wait_requests(req);
    T* out = data + displs[rank_];
    for (int k = 0; k < mine; ++k) {
        T acc = parts[k];
        for (int i = 1; i < w; ++i) acc += parts[static_cast<size_t>(i) * mine + k];
        out[k] = acc;
    }
    MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, type, data, counts.data(), displs.data(), type, comm_, &req[0]));
    wait_requests(req);
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
    check_cpu("all_reduce", t);
    mpi_type(t.dtype());  // validates the dtype before anyone waits
    begin(CollectiveKind::all_reduce);
    const int64_t n = t.numel();
    auto run = [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if (world_ > 1)
            for (int64_t off = 0; off < n; off += kMaxChunk) sum_in_rank_order<T>(p + off, std::min(kMaxChunk, n - off));
        if (op == ReduceOp::mean)
            for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / static_cast<T>(world_));
    };
    switch (t.dtype()) {
        case DType::f32: run(t.data<float>()); break;
        case DType::f64: run(t.data<double>()); break;
        case DType::i32: run(t.data<int32_t>()); break;
        default: run(t.data<int64_t>()); break;
    }
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
    begin(CollectiveKind::all_gather);
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    const int bytes = static_cast<int>(in.nbytes());
    MPI_CHECK(MPI_Iallgather(in.raw_data(), bytes, MPI_BYTE, out.raw_data(), bytes, MPI_BYTE, comm_, &req[0]));
    wait_requests(req);
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
    check_cpu("broadcast", t);
    SSL_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " outside a world of ", world_, " ranks");
    begin(CollectiveKind::broadcast);
    auto* p = static_cast<char*>(t.raw_data());
    const auto n = static_cast<int64_t>(t.nbytes());
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    for (int64_t off = 0; off < n; off += kMaxChunk) {
        MPI_CHECK(MPI_Ibcast(p + off, static_cast<int>(std::min(kMaxChunk, n - off)), MPI_BYTE, root, comm_, &req[0]));
        wait_requests(req);
    }
}

void MpiCommunicator::barrier() {
    begin(CollectiveKind::barrier);
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    MPI_CHECK(MPI_Ibarrier(comm_, &req[0]));
    wait_requests(req);
}

std::shared_ptr<Communicator> make_mpi_communicator() { return std::make_shared<MpiCommunicator>(); }

}  // namespace sslight::dist::detail
#endif  // SSLIGHT_WITH_MPI
