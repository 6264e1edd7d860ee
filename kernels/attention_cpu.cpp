// CPU reference of fused self-attention (kernels/attention.h): per (batch, head), O = softmax(s Q Kᵀ) V row by row
// with the max-subtracted softmax, saving lse; backward recomputes P = exp(s Q Kᵀ - lse) row by row with
// Dsum_i = dO_i·O_i and writes dq = s dS K, dk = s dSᵀ Q, dv = Pᵀ dO (dS = P ∘ (dO Vᵀ - Dsum)).
// OpenMP over the B*H pairs; each pair is gathered into contiguous (and transposed) scratch and processed in
// blocks of 16 queries so that the inner loops vectorise and stay in cache.
// Deterministic whatever the thread count: one thread owns a (batch, head) pair and sums in a fixed order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"

namespace sslight::kernels {
namespace {

// Strided view of one (b, h) slice: row t, column d at base[t * st + d].
template <class T>
struct Slice {
    T* base;
    int64_t st;
    T* row(int t) const { return base + t * st; }
};

template <class T>
Slice<T> in_slice(const AttentionParams& p, T* x, int64_t bh) {
    const int64_t b = bh / p.H, h = bh % p.H;
    return {x + b * p.in_sb + h * p.in_sh, p.in_st};
}
template <class T>
Slice<T> out_slice(const AttentionParams& p, T* x, int64_t bh) {
    const int64_t b = bh / p.H, h = bh % p.H;
    return {x + b * p.out_sb + h * p.out_sh, p.out_st};
}

// dst (n, D) contiguous <- src rows; dst_t (D, n) <- the transpose when given.
template <class T>
void gather(Slice<const T> src, int n, int D, T* dst, T* dst_t) {
    for (int t = 0; t < n; ++t) {
        const T* r = src.row(t);
        if (dst) std::copy(r, r + D, dst + int64_t(t) * D);
        if (dst_t)
            for (int d = 0; d < D; ++d) dst_t[int64_t(d) * n + t] = r[d];
    }
}

template <class T>
void scatter(const T* src, int n, int D, Slice<T> dst) {
    for (int t = 0; t < n; ++t) std::copy(src + int64_t(t) * D, src + int64_t(t + 1) * D, dst.row(t));
}

// The three block products below are compiled twice on x86-64 GCC, for AVX2 and for the baseline, and picked at
// load time: 8-wide instead of 4-wide vectors, with the same operations in the same order (no FMA), so the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SSL_ATTN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSL_ATTN_CLONES
#endif

constexpr int kRows = 16;  // queries per block: the block's score rows stay in L1 while K and V rows stream once

// s[i][j] = sum_d a[i][d] * bt[d][j] for i < nb, j < n (a: (nb, D), bt: (D, n), s: (nb, n)).
template <class T>
SSL_ATTN_CLONES void block_scores(const T* a, int nb, const T* bt, int n, int D, T* s) {
    std::fill(s, s + int64_t(nb) * n, T(0));
    for (int d = 0; d < D; ++d) {
        const T* b = bt + int64_t(d) * n;
        for (int i = 0; i < nb; ++i) {
            const T ad = a[int64_t(i) * D + d];
            T* si = s + int64_t(i) * n;
            for (int j = 0; j < n; ++j) si[j] += ad * b[j];
        }
    }
}

// out[i][d] += sum_j w[i][j] * m[j][d] (w: (nb, n), m: (n, D), out: (nb, D)).
template <class T>
SSL_ATTN_CLONES void block_times(const T* w, int nb, int n, const T* m, int D, T* out) {
    for (int j = 0; j < n; ++j) {
        const T* mj = m + int64_t(j) * D;
        for (int i = 0; i < nb; ++i) {
            const T wij = w[int64_t(i) * n + j];
            T* oi = out + int64_t(i) * D;
            for (int d = 0; d < D; ++d) oi[d] += wij * mj[d];
        }
    }
}

// out[j][d] += sum_i w[i][j] * x[i][d] (w: (nb, n), x: (nb, D), out: (n, D)).
template <class T>
SSL_ATTN_CLONES void block_times_t(const T* w, int nb, int n, const T* x, int D, T* out) {
    for (int j = 0; j < n; ++j) {
        T* oj = out + int64_t(j) * D;
        for (int i = 0; i < nb; ++i) {
            const T wij = w[int64_t(i) * n + j];
            const T* xi = x + int64_t(i) * D;
            for (int d = 0; d < D; ++d) oj[d] += wij * xi[d];
        }
    }
}

}  // namespace

template <class T>
void attention_fwd_cpu(const AttentionParams& p, const T* q, const T* k, const T* v, T* o, T* lse) {
    const int64_t BH = int64_t(p.B) * p.H;
    const int n = p.T, D = p.D;
    const T scale = static_cast<T>(p.scale);
#pragma omp parallel
    {
        std::vector<T> kt(size_t(n) * D), vv(size_t(n) * D), qb(size_t(kRows) * D), s(size_t(kRows) * n),
            ob(size_t(kRows) * D);
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < BH; ++bh) {
            gather(in_slice(p, k, bh), n, D, static_cast<T*>(nullptr), kt.data());
            gather(in_slice(p, v, bh), n, D, vv.data(), static_cast<T*>(nullptr));
            const Slice<const T> qsl = in_slice(p, q, bh);
            const Slice<T> osl = out_slice(p, o, bh);
            for (int i0 = 0; i0 < n; i0 += kRows) {
                const int nb = std::min(kRows, n - i0);
                for (int i = 0; i < nb; ++i)
                    for (int d = 0; d < D; ++d) qb[size_t(i) * D + d] = qsl.row(i0 + i)[d] * scale;
                block_scores(qb.data(), nb, kt.data(), n, D, s.data());
                T inv[kRows];
                for (int i = 0; i < nb; ++i) {  // softmax numerators; lse = m + log(sum)
                    T* si = s.data() + int64_t(i) * n;
                    const T m = *std::max_element(si, si + n);
                    T l = 0;
                    for (int j = 0; j < n; ++j) l += si[j] = std::exp(si[j] - m);
                    inv[i] = T(1) / l;
                    lse[bh * n + i0 + i] = m + std::log(l);
                }
                std::fill(ob.begin(), ob.end(), T(0));
                block_times(s.data(), nb, n, vv.data(), D, ob.data());
                for (int i = 0; i < nb; ++i)
                    for (int d = 0; d < D; ++d) osl.row(i0 + i)[d] = ob[size_t(i) * D + d] * inv[i];
            }
        }
    }
}

namespace {

// One (b, h) pair of the backward: Q, K, dO gathered, K and V also transposed; per block of queries the P and
// s dS rows, then dq of the block, and dK, dV summed over the blocks in order.
template <class T>
struct BwdScratch {
    std::vector<T> qq, kk, kt, vt, dov, dk, dv, pb, gb, dqb;
    BwdScratch(int n, int D)
        : qq(size_t(n) * D), kk(size_t(n) * D), kt(size_t(n) * D), vt(size_t(n) * D), dov(size_t(n) * D),
          dk(size_t(n) * D), dv(size_t(n) * D), pb(size_t(kRows) * n), gb(size_t(kRows) * n),
          dqb(size_t(kRows) * D) {}
};

template <class T>
void bwd_pair(const AttentionParams& p, int64_t bh, const T* q, const T* k, const T* v, const T* o, const T* dout,
              const T* lse, T* dq, T* dk, T* dv, BwdScratch<T>& w) {
    const int n = p.T, D = p.D;
    const T scale = static_cast<T>(p.scale);
    gather(in_slice(p, q, bh), n, D, w.qq.data(), static_cast<T*>(nullptr));
    gather(in_slice(p, k, bh), n, D, w.kk.data(), w.kt.data());
    gather(in_slice(p, v, bh), n, D, static_cast<T*>(nullptr), w.vt.data());
    gather(out_slice(p, dout, bh), n, D, w.dov.data(), static_cast<T*>(nullptr));
    std::fill(w.dk.begin(), w.dk.end(), T(0));
    std::fill(w.dv.begin(), w.dv.end(), T(0));
    const Slice<const T> osl = out_slice(p, o, bh);
    for (int i0 = 0; i0 < n; i0 += kRows) {
        const int nb = std::min(kRows, n - i0);
        const T* qb = w.qq.data() + int64_t(i0) * D;
        const T* dob = w.dov.data() + int64_t(i0) * D;
        block_scores(qb, nb, w.kt.data(), n, D, w.pb.data());   // q·k
        block_scores(dob, nb, w.vt.data(), n, D, w.gb.data());  // dP = dO·v
        for (int i = 0; i < nb; ++i) {
            T dsum = 0;
            for (int d = 0; d < D; ++d) dsum += dob[int64_t(i) * D + d] * osl.row(i0 + i)[d];
            const T l = lse[bh * n + i0 + i];
            T* pi = w.pb.data() + int64_t(i) * n;
            T* gi = w.gb.data() + int64_t(i) * n;
            for (int j = 0; j < n; ++j) {
                pi[j] = std::exp(scale * pi[j] - l);    // P_ij
                gi[j] = scale * pi[j] * (gi[j] - dsum);  // s dS_ij
            }
        }
        if (dq) {
            std::fill(w.dqb.begin(), w.dqb.end(), T(0));
            block_times(w.gb.data(), nb, n, w.kk.data(), D, w.dqb.data());
            scatter(w.dqb.data(), nb, D, Slice<T>{in_slice(p, dq, bh).row(i0), p.in_st});
        }
        if (dk) block_times_t(w.gb.data(), nb, n, qb, D, w.dk.data());
        if (dv) block_times_t(w.pb.data(), nb, n, dob, D, w.dv.data());
    }
    if (dk) scatter(w.dk.data(), n, D, in_slice(p, dk, bh));
    if (dv) scatter(w.dv.data(), n, D, in_slice(p, dv, bh));
}
}  // namespace

template <class T>
void attention_bwd_cpu(const AttentionParams& p, const T* q, const T* k, const T* v, const T* o, const T* dout,
                       const T* lse, T* dq, T* dk, T* dv) {
    if (!dq && !dk && !dv) return;
    const int64_t BH = int64_t(p.B) * p.H;
#pragma omp parallel
    {
        BwdScratch<T> w(p.T, p.D);
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < BH; ++bh) bwd_pair(p, bh, q, k, v, o, dout, lse, dq, dk, dv, w);
    }
}

template void attention_fwd_cpu<float>(const AttentionParams&, const float*, const float*, const float*, float*,
                                       float*);
template void attention_fwd_cpu<double>(const AttentionParams&, const double*, const double*, const double*,
                                        double*, double*);
template void attention_bwd_cpu<float>(const AttentionParams&, const float*, const float*, const float*,
                                       const float*, const float*, const float*, float*, float*, float*);
template void attention_bwd_cpu<double>(const AttentionParams&, const double*, const double*, const double*,
                                        const double*, const double*, const double*, double*, double*, double*);

}  // namespace sslight::kernels
