// Data parallel: rank 0's parameters and buffers broadcast at start, gradient averaging in flattened buckets
// (g = (1/world) Σ_r g_r, one all_reduce per bucket after backward), synchronised BatchNorm through the
// statistics hook. Each bucket's flat buffer is [gradients..., one "defined" flag per parameter], so a
// parameter that received no gradient on some ranks is still averaged consistently everywhere.
#include "engine/dist/data_parallel.h"

#include <algorithm>

#include "engine/device.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"

namespace sslight::dist {

namespace {
// Writes flags[i] (0 / 1) to dst[i] on `dev`, or reads them back, for a bucket of dtype T.
template <class T>
void put_flags(void* dst, Device dev, const std::vector<char>& flags) {
    std::vector<T> v(flags.begin(), flags.end());
    runtime::copy(dst, dev, v.data(), Device::cpu(), v.size() * sizeof(T));
}
template <class T>
std::vector<char> get_flags(const void* src, Device dev, size_t n) {
    std::vector<T> v(n);
    runtime::copy(v.data(), Device::cpu(), src, dev, n * sizeof(T));
    std::vector<char> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = v[i] > T(0) ? 1 : 0;
    return out;
}
}  // namespace

DataParallel::DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, size_t bucket_bytes)
    : model_(model), comm_(std::move(comm)) {
    SSL_CHECK(comm_ != nullptr, "DataParallel: the communicator is null");
    auto named = model_.named_parameters(/*trainable_only=*/true);
    std::reverse(named.begin(), named.end());
    size_t bytes = 0;
    for (auto& [name, p] : named) {
        SSL_CHECK_DTYPE(p->dtype() == DType::f32 || p->dtype() == DType::f64, "DataParallel: parameter '", name,
                        "' is ", p->str(), "; gradient averaging handles f32 and f64 (master weights)");
        bool fresh = buckets_.empty() || buckets_.back().params.front()->dtype() != p->dtype() ||
                     buckets_.back().params.front()->device() != p->device() || bytes + p->nbytes() > bucket_bytes;
        if (fresh) {
            buckets_.emplace_back();
            bytes = 0;
        }
        Bucket& b = buckets_.back();
        b.params.push_back(p);
        b.offsets.push_back(b.numel);
        b.numel += p->numel();
        bytes += p->nbytes();
    }
    for (Bucket& b : buckets_) {
        Tensor& first = *b.params.front();
        b.flat = zeros({b.numel + static_cast<int64_t>(b.params.size())}, first.dtype(), first.device());
    }
}

void DataParallel::broadcast_parameters() {
    std::vector<std::pair<std::string, Tensor*>> all = model_.named_parameters(false);
    for (auto& nb : model_.named_buffers()) all.push_back(nb);
    // Layout check first: count, total elements and a hash of the shapes must match rank 0's.
    int64_t total = 0;
    uint64_t hash = 1469598103934665603ull;
    for (auto& [name, t] : all) {
        total += t->numel();
        for (int64_t d : t->shape()) hash = (hash ^ static_cast<uint64_t>(d + 1)) * 1099511628211ull;
        hash = (hash ^ static_cast<uint64_t>(t->dtype())) * 1099511628211ull;
    }
    std::vector<int64_t> mine = {static_cast<int64_t>(all.size()), total, static_cast<int64_t>(hash >> 1)};
    Tensor layout = from_vector<int64_t>(mine, {3});
    comm_->broadcast(layout, 0);
    std::vector<int64_t> root = layout.to_vector<int64_t>();
    SSL_CHECK(root == mine, "DataParallel::broadcast_parameters: rank ", comm_->rank(), " has ", mine[0],
              " parameters and buffers with ", mine[1], " elements, rank 0 has ", root[0], " with ", root[1],
              (root[0] == mine[0] && root[1] == mine[1] ? " (shapes or dtypes differ)" : ""),
              ": every rank must build the same model");
    for (auto& [name, t] : all) comm_->broadcast(*t, 0);
}

void DataParallel::reduce_bucket(Bucket& b) {
    const Device dev = b.flat.device();
    const size_t es = dtype_size(b.flat.dtype());
    char* base = static_cast<char*>(b.flat.raw_data());
    const size_t k = b.params.size();
    std::vector<char> defined(k, 0);
    bool all_defined = true;
    for (size_t i = 0; i < k; ++i) {
        Tensor& p = *b.params[i];
        Tensor g = p.grad();
        char* dst = base + static_cast<size_t>(b.offsets[i]) * es;
        SSL_CHECK_DEVICE(p.device() == dev, "DataParallel: parameter ", p.str(), " moved after DataParallel was "
                         "built on ", dev.str(), "; move the model first");
        if (g.defined()) {
            SSL_CHECK_SHAPE(g.numel() == p.numel() && g.dtype() == p.dtype() && g.device() == dev,
                            "DataParallel: gradient ", g.str(), " does not match its parameter ", p.str());
            runtime::copy(dst, dev, g.raw_data(), g.device(), g.nbytes());
            defined[i] = 1;
        } else {
            runtime::fill_zero(dst, dev, p.nbytes());
            all_defined = false;
        }
    }
    void* flags_at = base + static_cast<size_t>(b.numel) * es;
    bool f64 = b.flat.dtype() == DType::f64;
    f64 ? put_flags<double>(flags_at, dev, defined) : put_flags<float>(flags_at, dev, defined);

    comm_->all_reduce(b.flat, ReduceOp::sum);
    Tensor grads = b.flat.slice(0, b.numel);
    if (comm_->world() > 1) mul_(grads, 1.0 / comm_->world());

    // Only a rank missing some gradient needs to know whether another rank had it (the one device read).
    std::vector<char> any = defined;
    if (!all_defined) any = f64 ? get_flags<double>(flags_at, dev, k) : get_flags<float>(flags_at, dev, k);
    for (size_t i = 0; i < k; ++i) {
        Tensor& p = *b.params[i];
        const char* src = base + static_cast<size_t>(b.offsets[i]) * es;
        if (defined[i]) {
            Tensor g = p.grad();
            runtime::copy(g.raw_data(), dev, src, dev, g.nbytes());
        } else if (any[i]) {
            Tensor g = empty(p.shape(), p.dtype(), dev);
            runtime::copy(g.raw_data(), dev, src, dev, g.nbytes());
            p.set_grad(g);
        }
    }
}

void DataParallel::synchronize_gradients() {
    for (Bucket& b : buckets_) reduce_bucket(b);
}

void DataParallel::enable_sync_batchnorm() {
    std::shared_ptr<Communicator> comm = comm_;
    for (auto& [name, m] : model_.named_modules()) {
        auto* bn = dynamic_cast<nn::BatchNorm*>(m);
        if (bn == nullptr) continue;
        if (comm->world() > 1)
            bn->args.all_reduce = [comm](Tensor& stats) { comm->all_reduce(stats, ReduceOp::sum); };
        else
            bn->args.all_reduce = nullptr;
    }
}

}  // namespace sslight::dist
