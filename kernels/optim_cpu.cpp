// CPU implementation and reference of the multi-tensor optimizer kernels (kernels/optim.h): SGD, LARS and
// AdamW updates, per-tensor sums of squares and gradient clipping. One OpenMP loop over (tensor, chunk) work
// items covers the whole parameter list; reductions sum fixed chunks in double, then the chunks of a tensor in
// order, so results do not depend on the thread count. No gradients: parameters and buffers update in place.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/optim.h"

namespace sslight::kernels {
namespace {

struct Item {
    int t;                // tensor
    int64_t begin, end;   // element range
};

std::vector<Item> plan(const std::vector<int64_t>& numel) {
    std::vector<Item> items;
    for (size_t t = 0; t < numel.size(); ++t)
        for (int64_t b = 0; b < numel[t]; b += kMtaChunk)
            items.push_back({static_cast<int>(t), b, std::min(numel[t], b + kMtaChunk)});
    return items;
}

template <class T>
std::vector<int64_t> sizes(const std::vector<OptimSlot<T>>& slots) {
    std::vector<int64_t> n;
    for (const auto& s : slots) n.push_back(s.numel);
    return n;
}

// Runs f(item) for every item; f must touch only its own item's elements.
template <class F>
void parallel_items(const std::vector<Item>& items, const F& f) {
    const int64_t n = static_cast<int64_t>(items.size());
#pragma omp parallel for schedule(dynamic, 2) if (n > 1)
    for (int64_t k = 0; k < n; ++k) f(items[k]);
}

// Per-tensor totals of per-item partials (width values per item), summed in item order.
std::vector<double> totals(const std::vector<Item>& items, const std::vector<double>& partial, size_t n_tensors,
                           int width) {
    std::vector<double> out(n_tensors * width, 0.0);
    for (size_t k = 0; k < items.size(); ++k)
        for (int w = 0; w < width; ++w) out[items[k].t * width + w] += partial[k * width + w];
    return out;
}

// Element loops over one work item, on restrict pointers so that the compiler vectorises them.
template <class T>
void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict m, int64_t n, T lr, T wd, T mu, bool first,
               bool nesterov) {
    if (!m) {
        for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (first) {  // the buffer starts as d
        for (int64_t i = 0; i < n; ++i) {
            const T d = g[i] + wd * p[i];
            m[i] = d;
            p[i] -= lr * (nesterov ? d + mu * d : d);
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            const T d = g[i] + wd * p[i], buf = mu * m[i] + d;
            m[i] = buf;
            p[i] -= lr * (nesterov ? d + mu * buf : buf);
        }
    }
}

// Σx² and Σ(g + wd·x)² (when g) in double, four interleaved accumulators combined in a fixed order.
template <class T>
void sumsq_range(const T* __restrict x, const T* __restrict g, int64_t n, T wd, double* xx, double* dd) {
    double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        a[i & 3] += v * v;
        if (g) {
            const double d = static_cast<double>(g[i] + wd * x[i]);
            b[i & 3] += d * d;
        }
    }
    *xx = (a[0] + a[1]) + (a[2] + a[3]);
    if (dd) *dd = (b[0] + b[1]) + (b[2] + b[3]);
}

template <class T>
void lars_range(T* __restrict p, const T* __restrict g, T* __restrict m, int64_t n, T lr, T wd, T mu, T q) {
    for (int64_t i = 0; i < n; ++i) {
        const T buf = mu * m[i] + (g[i] + wd * p[i]) * q;
        m[i] = buf;
        p[i] -= lr * buf;
    }
}

template <class T>
struct AdamConsts {
    T b1, b2, c1, c2, eps, decay, step_size, bc2_sqrt;
};
template <class T>
void adamw_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
                 const AdamConsts<T> k) {
    for (int64_t i = 0; i < n; ++i) {
        const T mi = k.b1 * m[i] + k.c1 * g[i], vi = k.b2 * v[i] + k.c2 * g[i] * g[i];
        m[i] = mi, v[i] = vi;
        const T pi = p[i] * k.decay;
        p[i] = pi - k.step_size * (mi / (std::sqrt(vi) / k.bc2_sqrt + k.eps));
    }
}

}  // namespace

template <class T>
void sgd_step_cpu(const std::vector<OptimSlot<T>>& slots, const SgdHyper& h) {
    parallel_items(plan(sizes(slots)), [&](const Item& it) {
        const OptimSlot<T>& s = slots[it.t];
        const int64_t b = it.begin;
        sgd_range<T>(s.param + b, s.grad + b, s.buf1 ? s.buf1 + b : nullptr, it.end - b, static_cast<T>(s.lr),
                     static_cast<T>(s.weight_decay), static_cast<T>(h.momentum), s.step <= 1, h.nesterov);
    });
}

template <class T>
void lars_step_cpu(const std::vector<OptimSlot<T>>& slots, const LarsHyper& h, double* sumsq) {
    const std::vector<Item> items = plan(sizes(slots));
    std::vector<double> partial(items.size() * 2);
    parallel_items(items, [&](const Item& it) {
        const OptimSlot<T>& s = slots[it.t];
        const size_t k = static_cast<size_t>(&it - items.data());
        sumsq_range<T>(s.param + it.begin, s.grad + it.begin, it.end - it.begin, static_cast<T>(s.weight_decay),
                       &partial[2 * k], &partial[2 * k + 1]);
    });
    const std::vector<double> tot = totals(items, partial, slots.size(), 2);
    if (sumsq)
        for (size_t k = 0; k < tot.size(); ++k) sumsq[k] = tot[k];
    std::vector<T> trust(slots.size(), T(1));
    for (size_t t = 0; t < slots.size(); ++t) {
        const T pn = static_cast<T>(std::sqrt(tot[2 * t])), dn = static_cast<T>(std::sqrt(tot[2 * t + 1]));
        if (slots[t].lars_adapt && pn > 0 && dn > 0) trust[t] = static_cast<T>(h.eta) * pn / dn;
    }
    parallel_items(items, [&](const Item& it) {
        const OptimSlot<T>& s = slots[it.t];
        const int64_t b = it.begin;
        lars_range<T>(s.param + b, s.grad + b, s.buf1 + b, it.end - b, static_cast<T>(s.lr),
                      static_cast<T>(s.weight_decay), static_cast<T>(h.momentum), trust[it.t]);
    });
}

template <class T>
void adamw_step_cpu(const std::vector<OptimSlot<T>>& slots, const AdamWHyper& h) {
    std::vector<AdamConsts<T>> consts;
    for (const OptimSlot<T>& s : slots) {
        const double t = static_cast<double>(s.step);
        consts.push_back({static_cast<T>(h.beta1), static_cast<T>(h.beta2), static_cast<T>(1 - h.beta1),
                          static_cast<T>(1 - h.beta2), static_cast<T>(h.eps), static_cast<T>(1 - s.lr * s.weight_decay),
                          static_cast<T>(s.lr / (1 - std::pow(h.beta1, t))),
                          static_cast<T>(std::sqrt(1 - std::pow(h.beta2, t)))});
    }
    parallel_items(plan(sizes(slots)), [&](const Item& it) {
        const OptimSlot<T>& s = slots[it.t];
        const int64_t b = it.begin;
        adamw_range<T>(s.param + b, s.grad + b, s.buf1 + b, s.buf2 + b, it.end - b, consts[it.t]);
    });
}

template <class T>
void sumsq_cpu(const std::vector<const T*>& x, const std::vector<int64_t>& numel, double* out) {
    const std::vector<Item> items = plan(numel);
    std::vector<double> partial(items.size());
    parallel_items(items, [&](const Item& it) {
        sumsq_range<T>(x[it.t] + it.begin, nullptr, it.end - it.begin, T(0),
                       &partial[static_cast<size_t>(&it - items.data())], nullptr);
    });
    const std::vector<double> tot = totals(items, partial, x.size(), 1);
    for (size_t t = 0; t < x.size(); ++t) out[t] = tot[t];
}

template <class T>
void clip_scale_cpu(const std::vector<T*>& x, const std::vector<int64_t>& numel, const double* sumsq, ClipMode mode,
                    double max_norm) {
    std::vector<double> coef(x.size(), 1.0);
    if (mode == ClipMode::global) {
        double total = 0;
        for (size_t t = 0; t < x.size(); ++t) total += sumsq[t];
        const double c = max_norm / (std::sqrt(total) + 1e-6);
        for (double& v : coef) v = c;
    } else {
        for (size_t t = 0; t < x.size(); ++t) coef[t] = max_norm / (std::sqrt(sumsq[t]) + 1e-6);
    }
    parallel_items(plan(numel), [&](const Item& it) {
        if (coef[it.t] >= 1.0) return;
        const T c = static_cast<T>(coef[it.t]);
        for (int64_t i = it.begin; i < it.end; ++i) x[it.t][i] *= c;
    });
}

#define SSL_OPTIM_INSTANTIATE(T)                                                                               \
    template void sgd_step_cpu<T>(const std::vector<OptimSlot<T>>&, const SgdHyper&);                          \
    template void lars_step_cpu<T>(const std::vector<OptimSlot<T>>&, const LarsHyper&, double*);               \
    template void adamw_step_cpu<T>(const std::vector<OptimSlot<T>>&, const AdamWHyper&);                      \
    template void sumsq_cpu<T>(const std::vector<const T*>&, const std::vector<int64_t>&, double*);            \
    template void clip_scale_cpu<T>(const std::vector<T*>&, const std::vector<int64_t>&, const double*, ClipMode, \
                                    double);
SSL_OPTIM_INSTANTIATE(float)
SSL_OPTIM_INSTANTIATE(double)
#undef SSL_OPTIM_INSTANTIATE

}  // namespace sslight::kernels
