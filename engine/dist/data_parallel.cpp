// Data parallel: rank 0's parameters and buffers broadcast at start, gradient averaging in flattened buckets
// (g = (1/world) Σ_r g_r), each bucket's all_reduce_async launched from the autograd post-accumulate hook of its
// last gradient (in bucket order, so every rank starts them in the same order) and waited for in
// synchronize_gradients(), synchronised BatchNorm through the statistics hook. Each bucket's flat buffer is
// [gradients..., one "defined" flag per parameter], so a parameter that received no gradient on some ranks is still
// averaged consistently everywhere. Copies into and out of the buckets are stream-ordered on the GPU.
#include "engine/dist/data_parallel.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"

namespace sslight::dist {

namespace {
// Reads back the summed flags of a bucket (> 0: some rank had the gradient), for a bucket of dtype T.
template <class T>
std::vector<char> get_flags(const void* src, Device dev, size_t n) {
    std::vector<T> v(n);
    runtime::copy(v.data(), Device::cpu(), src, dev, n * sizeof(T));
    std::vector<char> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = v[i] > T(0) ? 1 : 0;
    return out;
}
}  // namespace

DataParallel::DataParallel(nn::Module& model, std::shared_ptr<Communicator> comm, size_t bucket_bytes, bool overlap)
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
        b.names.push_back(name);
        b.offsets.push_back(b.numel);
        b.numel += p->numel();
        bytes += p->nbytes();
    }
    for (Bucket& b : buckets_) {
        const Tensor& first = *b.params.front();
        const auto k = static_cast<int64_t>(b.params.size());
        b.flat = zeros({b.numel + k}, first.dtype(), first.device());
        b.ones = full({k}, 1.0, first.dtype(), first.device());
        b.filled.assign(b.params.size(), 0);
        b.defined.assign(b.params.size(), 0);
    }
    if (!overlap) return;
    for (size_t bi = 0; bi < buckets_.size(); ++bi)
        for (size_t i = 0; i < buckets_[bi].params.size(); ++i)
            hooks_.push_back(add_post_accumulate_hook(*buckets_[bi].params[i],
                                                      [this, bi, i](const Tensor&) { on_gradient(bi, i); }));
}

DataParallel::~DataParallel() {
    for (uint64_t id : hooks_) remove_post_accumulate_hook(id);
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

void DataParallel::on_gradient(size_t bi, size_t i) {
    Bucket& b = buckets_[bi];
    SSL_CHECK(!b.filled[i], "DataParallel: parameter '", b.names[i], "' received a second gradient before "
              "synchronize_gradients(); call it after every backward, or build DataParallel with overlap = false "
              "to accumulate several backward passes");
    fill(b, i);
    launch_ready();
}

void DataParallel::fill(Bucket& b, size_t i) {
    const Device dev = b.flat.device();
    Tensor& p = *b.params[i];
    Tensor g = p.grad();
    char* dst = static_cast<char*>(b.flat.raw_data()) + static_cast<size_t>(b.offsets[i]) * dtype_size(p.dtype());
    SSL_CHECK_DEVICE(p.device() == dev, "DataParallel: parameter '", b.names[i], "' (", p.str(), ") moved after "
                     "DataParallel was built on ", dev.str(), "; move the model first");
    if (g.defined()) {
        SSL_CHECK_SHAPE(g.numel() == p.numel() && g.dtype() == p.dtype() && g.device() == dev, "DataParallel: "
                        "gradient ", g.str(), " does not match its parameter '", b.names[i], "' ", p.str());
        runtime::copy(dst, dev, g.raw_data(), dev, g.nbytes());
    } else {
        runtime::fill_zero(dst, dev, p.nbytes());
    }
    b.defined[i] = g.defined() ? 1 : 0;
    b.filled[i] = 1;
    b.num_filled += 1;
}

void DataParallel::launch_ready() {
    while (next_launch_ < buckets_.size() && buckets_[next_launch_].num_filled == buckets_[next_launch_].params.size())
        launch(buckets_[next_launch_++]);
    for (size_t b = 0; b < next_launch_; ++b) buckets_[b].work->test();  // progress the ones in flight
}

void DataParallel::launch(Bucket& b) {
    const Device dev = b.flat.device();
    const size_t es = dtype_size(b.flat.dtype());
    char* flags = static_cast<char*>(b.flat.raw_data()) + static_cast<size_t>(b.numel) * es;
    runtime::copy(flags, dev, b.ones.raw_data(), dev, b.ones.nbytes());
    for (size_t i = 0; i < b.params.size(); ++i)
        if (!b.defined[i]) runtime::fill_zero(flags + i * es, dev, es);
    b.work = comm_->all_reduce_async(b.flat, ReduceOp::sum);
}

void DataParallel::finish(Bucket& b) {
    b.work->wait();
    const Device dev = b.flat.device();
    const size_t es = dtype_size(b.flat.dtype());
    char* base = static_cast<char*>(b.flat.raw_data());
    Tensor grads = b.flat.slice(0, b.numel);
    if (comm_->world() > 1) mul_(grads, 1.0 / comm_->world());
    // Only a rank missing some gradient needs to know whether another rank had it (the one device read).
    std::vector<char> any = b.defined;
    if (std::find(b.defined.begin(), b.defined.end(), 0) != b.defined.end()) {
        const void* flags = base + static_cast<size_t>(b.numel) * es;
        any = b.flat.dtype() == DType::f64 ? get_flags<double>(flags, dev, b.params.size())
                                           : get_flags<float>(flags, dev, b.params.size());
    }
    for (size_t i = 0; i < b.params.size(); ++i) {
        if (!any[i]) continue;
        Tensor& p = *b.params[i];
        const char* src = base + static_cast<size_t>(b.offsets[i]) * es;
        Tensor g = p.grad();
        if (!g.defined()) {
            g = empty(p.shape(), p.dtype(), dev);
            p.set_grad(g);
        }
        runtime::copy(g.raw_data(), dev, src, dev, g.nbytes());
    }
    std::fill(b.filled.begin(), b.filled.end(), 0);
    b.num_filled = 0;
    b.work = nullptr;
}

void DataParallel::synchronize_gradients() {
    for (Bucket& b : buckets_)
        for (size_t i = 0; i < b.params.size(); ++i)
            if (!b.filled[i]) fill(b, i);
    launch_ready();
    for (Bucket& b : buckets_) finish(b);
    next_launch_ = 0;
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
