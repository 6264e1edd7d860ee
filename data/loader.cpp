// The threaded multi-crop loader (data/loader.h): worker threads take sample positions in order under one mutex,
// decode each sample once and resample its views into the slot of its batch in a ring of prefetch_batches
// slots; the consumer takes batches in order. Condition variables only (no polling); batch buffers come from a
// free list and go back to it when the caller no longer references them. Bad files are replaced through
// replacement_candidate(). No gradients.
#include "data/loader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "engine/device.h"
#include "kernels/augment.h"

#ifdef SSLIGHT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sslight::data {

std::vector<ViewGroup> view_groups(const ViewRecipe& r) {
    validate(r);
    std::vector<ViewGroup> out;
    const auto add = [&](const std::vector<ViewSpec>& specs, int first, const char* what) {
        if (specs.empty()) return;
        ViewGroup g{specs[0].size, {}};
        for (size_t i = 0; i < specs.size(); ++i) {
            SSL_CHECK_T(ConfigError, specs[i].size == g.size, "the loader batches each kind of view at one size: ",
                        what, "[", i, "].size is ", specs[i].size, ", ", what, "[0].size is ", g.size);
            g.views.push_back(first + static_cast<int>(i));
        }
        out.push_back(g);
    };
    add(r.globals, 0, "globals");
    add(r.locals, static_cast<int>(r.globals.size()), "locals");
    return out;
}

int64_t replacement_candidate(uint64_t seed, int64_t index, int j, int64_t n) {
    uint64_t z = seed ^ (static_cast<uint64_t>(index) * 0x9e3779b97f4a7c15ull) ^
                 (static_cast<uint64_t>(j) * 0xd1b54a32d192ed03ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<int64_t>(z % static_cast<uint64_t>(n));
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One reusable set of batch tensors (full batch size); page-locked in CUDA builds when asked.
struct Buffer {
    std::vector<Tensor> groups;
    std::vector<std::vector<AugmentParams>> params;
    Tensor labels;
    std::vector<int64_t> indices;
    std::vector<void*> registered;
    ~Buffer() {
#ifdef SSLIGHT_WITH_CUDA
        for (void* p : registered) cudaHostUnregister(p);
#endif
    }
    bool referenced_elsewhere() const {
        for (const Tensor& t : groups)
            if (t.impl().storage.use_count() > 1) return true;
        return labels.impl().storage.use_count() > 1;
    }
};

struct Slot {
    std::shared_ptr<Buffer> buf;
    int64_t batch = -1, rows = 0, remaining = 0;
    bool ready = false;
};

struct Worker {
    explicit Worker(const DecodeOptions& o) : dec(o) {}
    Decoder dec;
    std::vector<CropRequest> reqs;
    CropSource src;
    double decode_s = 0, crop_s = 0;  // not yet added to the shared stats
};

}  // namespace

struct MultiCropLoader::Impl {
    Dataset ds;
    ViewRecipe recipe;
    std::vector<ViewGroup> groups;
    LoaderOptions opts;
    Sampler sampler;
    int64_t B = 0, nb = 0;
    int nthreads = 1;

    mutable std::mutex mu;
    std::condition_variable cv_work, cv_ready, cv_idle;
    bool stop = false, started = false, failed = false, summary_done = false;
    std::string fatal;
    uint64_t generation = 0;
    int64_t epoch = 0, total = 0, next_pos = 0, consumed = 0;
    int active = 0;
    std::vector<int64_t> indices;
    std::vector<Slot> ring;
    std::vector<std::shared_ptr<Buffer>> free_list;
    std::shared_ptr<Buffer> handed_out;
    int64_t tried_epoch = 0, bad_epoch = 0, reported = 0;
    LoaderStats st;
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::thread> threads;

    Impl(const Dataset& d, const ViewRecipe& r, const LoaderOptions& o)
        : ds(d), recipe(r), groups(view_groups(r)), opts(o),
          sampler(d.size(), o.rank, o.world, o.seed, o.drop_last) {}

    int64_t rows_of(int64_t k) const { return std::min(B, total - k * B); }
    std::shared_ptr<Buffer> take_buffer_locked();
    void worker_loop(Worker& w);
    void load_sample(Worker& w, int64_t ep, int64_t pos, Buffer& buf, int64_t b, int64_t rows);
    void produce(Worker& w, int64_t ep, int64_t cand, Buffer& buf, int64_t b, int64_t rows);
    void note_bad(const std::string& path, const std::string& why);
    void start_epoch(int64_t e);
    void recycle_locked();
};


std::shared_ptr<Buffer> MultiCropLoader::Impl::take_buffer_locked() {
    if (!free_list.empty()) {
        std::shared_ptr<Buffer> b = std::move(free_list.back());
        free_list.pop_back();
        return b;
    }
    auto b = std::make_shared<Buffer>();
    for (const ViewGroup& g : groups) {
        const int64_t rows = B * static_cast<int64_t>(g.views.size());
        b->groups.push_back(empty({rows, g.size, g.size, 3}, DType::u8));
        b->params.emplace_back(static_cast<size_t>(rows));
    }
    b->labels = empty({B}, DType::i64);
    b->indices.resize(static_cast<size_t>(B));
#ifdef SSLIGHT_WITH_CUDA
    if (opts.pinned && runtime::cuda_device_count() > 0) {
        for (const Tensor& t : b->groups) {
            if (cudaHostRegister(t.raw_data(), t.nbytes(), cudaHostRegisterDefault) == cudaSuccess)
                b->registered.push_back(t.raw_data());
            else
                cudaGetLastError();  // stays pageable: the copies are slower, not wrong
        }
    }
#endif
    ++st.buffers;
    return b;
}

void MultiCropLoader::Impl::worker_loop(Worker& w) {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
        cv_work.wait(lk, [&] {
            return stop || (started && !failed && next_pos < total && next_pos / B < consumed + opts.prefetch_batches);
        });
        if (stop) return;
        const int64_t pos = next_pos++, k = pos / B;
        Slot& slot = ring[static_cast<size_t>(k % opts.prefetch_batches)];
        if (pos % B == 0) {
            slot.buf = take_buffer_locked();
            slot.batch = k, slot.rows = rows_of(k), slot.remaining = slot.rows, slot.ready = false;
        }
        std::shared_ptr<Buffer> buf = slot.buf;
        const uint64_t gen = generation;
        const int64_t ep = epoch, rows = slot.rows;
        ++active;
        lk.unlock();
        std::string error;
        try {
            load_sample(w, ep, pos, *buf, pos - k * B, rows);
        } catch (const std::exception& e) {  // not a bad file (those are IoErrors): stop the run, never crash
            error = e.what();
        }
        lk.lock();
        if (!error.empty() && !failed) {
            failed = true;
            fatal = "sslight loader: worker failed: " + error;
            cv_ready.notify_all();
        }
        --active;
        st.decode_seconds += w.decode_s, st.crop_seconds += w.crop_s;
        w.decode_s = w.crop_s = 0;
        if (gen == generation && --slot.remaining == 0) {
            slot.ready = true;
            cv_ready.notify_all();
        }
        if (active == 0) cv_idle.notify_all();
    }
}

// Sample `pos` of the epoch, or its replacements when it cannot be decoded.
void MultiCropLoader::Impl::load_sample(Worker& w, int64_t ep, int64_t pos, Buffer& buf, int64_t b, int64_t rows) {
    const int64_t idx = indices[static_cast<size_t>(pos)];
    std::string first_error;
    for (int j = 0; j <= kMaxReplacementProbes; ++j) {
        const int64_t cand = j == 0 ? idx : replacement_candidate(opts.seed, idx, j, ds.size());
        try {
            produce(w, ep, cand, buf, b, rows);
            buf.labels.data<int64_t>()[b] = ds.label(cand);
            buf.indices[static_cast<size_t>(b)] = cand;
            std::lock_guard<std::mutex> lk(mu);
            ++tried_epoch;
            return;
        } catch (const IoError& e) {  // DecodeError, unreadable or vanished files
            if (first_error.empty()) first_error = ds.path(cand) + ": " + e.what();
            note_bad(ds.path(cand), e.what());
        }
        std::lock_guard<std::mutex> lk(mu);
        if (failed || stop) return;
    }
    std::lock_guard<std::mutex> lk(mu);
    if (!failed) {
        failed = true;
        fatal = str("sslight loader: sample ", idx, " and its ", kMaxReplacementProbes,
                    " replacements could not be decoded (first: ", first_error, ")");
    }
    cv_ready.notify_all();
}

void MultiCropLoader::Impl::produce(Worker& w, int64_t ep, int64_t cand, Buffer& buf, int64_t b, int64_t rows) {
    const Clock::time_point t0 = Clock::now();
    const std::vector<uint8_t> bytes = read_file_bytes(ds.path(cand), opts.limits);
    const ImageInfo info = w.dec.probe(bytes.data(), bytes.size());
    const int nv = recipe.num_views();
    w.reqs.resize(static_cast<size_t>(nv));
    for (int v = 0; v < nv; ++v) {
        const ViewSpec& s = recipe.view(v);
        Rng rng = Rng::for_view(opts.seed, ep, cand, v);
        const CropBox box = random_resized_crop_box(info.width, info.height, s.scale_lo, s.scale_hi, s.ratio_lo,
                                                    s.ratio_hi, rng);
        w.reqs[static_cast<size_t>(v)] = CropRequest{box, s.size, s.size};
    }
    w.dec.decode_for_crops(bytes.data(), bytes.size(), w.reqs, w.src);
    const Clock::time_point t1 = Clock::now();
    const Image& im = w.src.image;
    for (size_t g = 0; g < groups.size(); ++g) {
        const int S = groups[g].size;
        uint8_t* base = buf.groups[g].data<uint8_t>();
        for (size_t vi = 0; vi < groups[g].views.size(); ++vi) {
            const int v = groups[g].views[vi];
            const int64_t row = static_cast<int64_t>(vi) * rows + b;
            resize_bicubic_aa(im.rgb.data(), im.width, im.height, im.stride(), w.src.boxes[static_cast<size_t>(v)],
                              base + row * S * S * 3, S, S);
            buf.params[g][static_cast<size_t>(row)] = draw_augment(recipe.view(v), opts.seed, ep, cand, v);
        }
    }
    w.decode_s += std::chrono::duration<double>(t1 - t0).count();
    w.crop_s += seconds_since(t1);
}

void MultiCropLoader::Impl::note_bad(const std::string& path, const std::string& why) {
    std::lock_guard<std::mutex> lk(mu);
    ++st.bad_files, ++bad_epoch, ++tried_epoch;
    if (reported < opts.max_bad_reports) {
        ++reported;
        std::fprintf(stderr, "sslight loader: skipping bad file %s (%s)\n", path.c_str(), why.c_str());
    }
    const int64_t min_tried = std::min<int64_t>(32, total);
    if (!failed && tried_epoch >= min_tried && double(bad_epoch) > opts.max_bad_fraction * double(tried_epoch)) {
        failed = true;
        fatal = str("sslight loader: ", bad_epoch, " of the ", tried_epoch, " files tried in epoch ", epoch,
                    " are bad (more than ", opts.max_bad_fraction * 100, "%); last: ", path, ": ", why,
                    " — check the data set");
        cv_ready.notify_all();
    }
}

// Puts the batch the caller had back on the free list unless the caller still holds its tensors.
void MultiCropLoader::Impl::recycle_locked() {
    if (handed_out && !handed_out->referenced_elsewhere()) free_list.push_back(std::move(handed_out));
    handed_out.reset();
}

void MultiCropLoader::Impl::start_epoch(int64_t e) {
    std::unique_lock<std::mutex> lk(mu);
    ++generation;
    next_pos = total;  // no new work for the abandoned epoch
    cv_idle.wait(lk, [&] { return active == 0; });
    for (Slot& s : ring) {
        if (s.buf) free_list.push_back(std::move(s.buf));
        s = Slot{};
    }
    epoch = e;
    indices = sampler.epoch_indices(e);
    const int64_t n = static_cast<int64_t>(indices.size());
    total = opts.drop_last ? nb * B : n;
    next_pos = 0, consumed = 0, tried_epoch = 0, bad_epoch = 0;
    started = true, summary_done = false;
    cv_work.notify_all();
}

MultiCropLoader::MultiCropLoader(const Dataset& dataset, const ViewRecipe& recipe, LoaderOptions opts) {
    SSL_CHECK_T(ConfigError, opts.batch_size > 0, "LoaderOptions::batch_size must be > 0, got ", opts.batch_size);
    SSL_CHECK_T(ConfigError, opts.prefetch_batches >= 1, "LoaderOptions::prefetch_batches must be >= 1, got ",
                opts.prefetch_batches);
    SSL_CHECK_T(ConfigError, opts.world >= 1 && opts.rank >= 0 && opts.rank < opts.world,
                "LoaderOptions: rank ", opts.rank, " is not in [0, world = ", opts.world, ")");
    SSL_CHECK_T(IoError, dataset.size() > 0, "sslight loader: the data set ", dataset.root(), " is empty");
    impl_ = std::make_unique<Impl>(dataset, recipe, opts);
    Impl& m = *impl_;
    m.B = opts.batch_size;
    const int64_t per_rank = m.sampler.num_samples();
    m.nb = opts.drop_last ? per_rank / m.B : (per_rank + m.B - 1) / m.B;
    SSL_CHECK_T(ConfigError, m.nb > 0, "sslight loader: ", per_rank, " samples per rank (data set ", dataset.root(),
                ", ", dataset.size(), " files, world ", opts.world, ") do not fill one batch of ", m.B,
                " with drop_last");
    m.ring.resize(static_cast<size_t>(opts.prefetch_batches));
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    m.nthreads = opts.num_threads > 0 ? opts.num_threads : static_cast<int>(hw);
    DecodeOptions dopts;
    dopts.limits = opts.limits;
    for (int i = 0; i < m.nthreads; ++i) m.workers.push_back(std::make_unique<Worker>(dopts));
    for (int i = 0; i < m.nthreads; ++i) m.threads.emplace_back([&m, i] { m.worker_loop(*m.workers[size_t(i)]); });
}

MultiCropLoader::~MultiCropLoader() {
    {
        std::lock_guard<std::mutex> lk(impl_->mu);
        impl_->stop = true;
    }
    impl_->cv_work.notify_all();
    impl_->cv_ready.notify_all();
    for (std::thread& t : impl_->threads) t.join();
}

void MultiCropLoader::start_epoch(int64_t epoch) { impl_->start_epoch(epoch); }
int64_t MultiCropLoader::batches_per_epoch() const { return impl_->nb; }
int MultiCropLoader::num_threads() const { return impl_->nthreads; }
const std::vector<ViewGroup>& MultiCropLoader::groups() const { return impl_->groups; }

bool MultiCropLoader::next(MultiCropBatch& out) {
    Impl& m = *impl_;
    out = MultiCropBatch{};
    if (!m.started) m.start_epoch(0);
    const Clock::time_point t0 = Clock::now();
    std::unique_lock<std::mutex> lk(m.mu);
    m.recycle_locked();
    SSL_CHECK_T(IoError, !m.failed, m.fatal);
    if (m.consumed * m.B >= m.total) {
        if (!m.summary_done && m.bad_epoch > 0)
            std::fprintf(stderr, "sslight loader: epoch %lld: %lld bad files skipped and replaced (%lld reported "
                         "individually over the run, at most %d)\n", static_cast<long long>(m.epoch),
                         static_cast<long long>(m.bad_epoch), static_cast<long long>(m.reported),
                         m.opts.max_bad_reports);
        m.summary_done = true;
        return false;
    }
    Slot& slot = m.ring[static_cast<size_t>(m.consumed % m.opts.prefetch_batches)];
    m.cv_ready.wait(lk, [&] { return m.failed || m.stop || (slot.ready && slot.batch == m.consumed); });
    SSL_CHECK_T(IoError, !m.failed, m.fatal);
    SSL_CHECK(!m.stop, "sslight loader: next() while the loader is being destroyed");
    const int64_t rows = slot.rows;
    Buffer& buf = *slot.buf;
    for (size_t g = 0; g < m.groups.size(); ++g) {
        const int64_t n = rows * static_cast<int64_t>(m.groups[g].views.size());
        out.groups.push_back(buf.groups[g].slice(0, n));
        out.params.emplace_back(buf.params[g].begin(), buf.params[g].begin() + n);
    }
    out.labels = buf.labels.slice(0, rows);
    out.indices.assign(buf.indices.begin(), buf.indices.begin() + rows);
    out.epoch = m.epoch, out.step = m.consumed;
    m.handed_out = std::move(slot.buf);
    slot = Slot{};
    ++m.consumed;
    m.st.batches += 1, m.st.samples += rows;
    m.st.wait_seconds += seconds_since(t0);
    m.cv_work.notify_all();
    return true;
}

LoaderStats MultiCropLoader::stats() const {
    std::lock_guard<std::mutex> lk(impl_->mu);
    return impl_->st;
}

namespace {
template <class T>
Tensor augment_typed(const Tensor& u8, const std::vector<AugmentParams>& params, Device device,
                     const kernels::AugmentBatch& p, DType dtype) {
    Tensor out = empty(u8.shape(), dtype, device);
    if (device.is_cpu()) {
        const Tensor in = u8.device().is_cpu() ? u8 : u8.to(Device::cpu());
        kernels::augment_fwd_cpu<T>(p, in.data<uint8_t>(), params.data(), out.data<T>());
        return out;
    }
#ifdef SSLIGHT_WITH_CUDA
    const Tensor in = u8.device() == device ? u8 : u8.to(device);
    Tensor host_params = empty({static_cast<int64_t>(params.size() * sizeof(AugmentParams))}, DType::u8);
    std::copy_n(reinterpret_cast<const uint8_t*>(params.data()), host_params.numel(), host_params.data<uint8_t>());
    const Tensor dev_params = host_params.to(device);
    Tensor ws = empty({std::max<int64_t>(1, p.B)}, DType::f32, device);
    kernels::cuda::augment_fwd<T>(p, in.data<uint8_t>(), reinterpret_cast<const AugmentParams*>(dev_params.raw_data()),
                                  ws.data<float>(), out.data<T>(), runtime::stream(device));
    runtime::after_op(device, "augment_group");
    runtime::synchronize(device);  // host_params / dev_params / ws die with this scope
    return out;
#else
    SSL_CHECK_DEVICE(false, "augment_group: ", device.str(), " needs a CUDA build");
    return out;
#endif
}
}  // namespace

Tensor augment_group(const Tensor& u8, const std::vector<AugmentParams>& params, Device device, DType dtype) {
    SSL_CHECK_DTYPE(u8.dtype() == DType::u8, "augment_group: crops must be u8, got ", u8.str());
    SSL_CHECK_SHAPE(u8.dim() == 4 && u8.size(3) == 3, "augment_group: crops must be [R, H, W, 3], got ", u8.str());
    SSL_CHECK_SHAPE(static_cast<int64_t>(params.size()) == u8.size(0), "augment_group: ", params.size(),
                    " parameter sets for ", u8.size(0), " crops");
    kernels::AugmentBatch p;
    p.B = static_cast<int>(u8.size(0)), p.H = static_cast<int>(u8.size(1)), p.W = static_cast<int>(u8.size(2));
    if (dtype == DType::f32) return augment_typed<float>(u8, params, device, p, dtype);
    SSL_CHECK_DTYPE(dtype == DType::bf16, "augment_group: output dtype must be f32 or bf16, got ", dtype_name(dtype));
    return augment_typed<bf16>(u8, params, device, p, dtype);
}

}  // namespace sslight::data
