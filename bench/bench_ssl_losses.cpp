// The SSL loss kernels (ssl/losses.h) at the paper's shapes against the same formulas written with the engine's
// generic ops (softmax, log_softmax, matmul, concat, cross_entropy, sum/mean, permute, mul_/add_), forward and
// backward through the op layer (allocation and autograd included), measured in the same run. GB/s counts the
// bytes a fused op must move: DINO / SwAV fwd = read S + T, fwd+bwd = 3|S| + 2|T| (S read twice, dS written,
// targets read twice); Sinkhorn = read scores + write codes; EMA = 12 B per parameter. InfoNCE reports GFLOP/s
// of its two GEMMs. GPU: one H200 at B = 128 per GPU; CPU: the same layouts at reduced batch sizes.
// --csv for CSV, --cpu-only / --gpu-only.
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/ops/softmax.h"
#include "engine/random.h"
#include "ssl/losses.h"

using namespace sslight;

namespace {

Tensor rand_on(const Shape& s, uint64_t seed, Device d, double scale = 1.0) {
    return (rand(s, RngKey{seed, 0}, DType::f32, Device::cpu()) * scale).to(d);
}

struct Bench {
    bench::Table& table;
    Device dev;
    int warmup, repeats;
    // One row: `ours` against `generic`, throughput = amount / time in `unit` (GB/s or GF/s of `amount` bytes/flops).
    void row(const std::string& name, const std::string& shape, double amount, const std::string& unit,
             const std::function<void()>& ours, const std::function<void()>& generic) {
        bench::Row r{str(dev.is_cpu() ? "cpu " : "gpu ", name), shape, unit};
        r.us = 1e6 * bench::time_median(ours, dev, warmup, repeats);
        r.cmp_name = "generic ops";
        r.cmp_us = 1e6 * bench::time_median(generic, dev, warmup, repeats);
        r.rate = amount / r.us * 1e-3, r.cmp_rate = amount / r.cmp_us * 1e-3;
        table.add(r);
    }
};

// Σ over pairs (i, v != i) of w·batch-mean −Σ P^i log softmax(s_v/τ), the λ-weighted form, with generic ops.
Tensor pair_loss_generic(const Tensor& s, const std::vector<Tensor>& P, double lgg, double lgl) {
    const int64_t G = int64_t(P.size()), B = P[0].size(0), V = s.size(0) / B;
    Tensor L;
    for (int64_t v = 0; v < V; ++v) {
        Tensor logp = log_softmax(s.slice(v * B, (v + 1) * B) * 10.0);
        for (int64_t i = 0; i < G; ++i) {
            if (i == v) continue;
            const double w = v < G ? lgg / double(G * (G - 1)) : lgl / double(G * (V - G));
            Tensor h = mean(neg(sum(P[size_t(i)] * logp, 1))) * w;
            L = L.defined() ? L + h : h;
        }
    }
    return L;
}

void bench_dino(Bench& b, int64_t B, int64_t K, int64_t V) {
    Tensor s = rand_on({V * B, K}, 1, b.dev, 4.0).requires_grad_(), t = rand_on({2 * B, K}, 2, b.dev);
    Tensor c = rand_on({K}, 3, b.dev, 0.1);
    ssl::DinoLossArgs a;
    a.teacher_temp = 0.04, a.lambda_gg = 0.4, a.lambda_gl = 0.6;
    auto generic = [&](bool bwd) {
        std::vector<Tensor> P;
        for (int i = 0; i < 2; ++i) P.push_back(softmax(sub(t.slice(i * B, (i + 1) * B), c) * 25.0));
        Tensor L = pair_loss_generic(s, P, 0.4, 0.6), tm = mean(t, 0);
        if (bwd) L.backward();
    };
    auto ours = [&](bool bwd) {
        Tensor L = ssl::dino_loss(s, t, c, a).loss;
        if (bwd) L.backward();
    };
    const double S = 4.0 * V * B * K, T = 4.0 * 2 * B * K;
    const std::string shape = str("B", B, " K", K, " 2+", V - 2);
    b.row(
        "dino fwd", shape, S + T, "GB/s",
        [&] {
            NoGradGuard ng;
            ours(false);
        },
        [&] {
            NoGradGuard ng;
            generic(false);
        });
    b.row(
        "dino fwd+bwd", shape, 3 * S + 2 * T, "GB/s", [&] { ours(true); }, [&] { generic(true); });
}

void bench_swav(Bench& b, int64_t B, int64_t K, int64_t V, int64_t queue) {
    Tensor s = rand_on({V * B, K}, 4, b.dev, 2.0).requires_grad_();
    Tensor scores = rand_on({queue + B, K}, 5, b.dev, 2.0) - 1.0;
    std::vector<Tensor> codes = {ssl::sinkhorn(scores).slice(queue, queue + B), ssl::sinkhorn(scores).slice(0, B)};
    const double S = 4.0 * V * B * K, T = 4.0 * 2 * B * K;
    b.row(
        "swav fwd+bwd", str("B", B, " K", K, " 2+", V - 2), 3 * S + 2 * T, "GB/s",
        [&] { ssl::swav_loss(s, codes, 0.4, 0.6).backward(); },
        [&] { pair_loss_generic(s, codes, 0.4, 0.6).backward(); });
    auto generic_sinkhorn = [&] {  // SwAV's loop on Q = exp(scores/ε)ᵀ (K × B) with generic ops
        Tensor Q = permute(exp(scores * 20.0), {1, 0});
        Q = Q / sum(Q);
        const double Bn = double(scores.size(0));
        for (int it = 0; it < 3; ++it) {
            Q = permute(permute(Q, {1, 0}) / sum(Q, 1), {1, 0}) / double(K);
            Q = Q / sum(Q, 0) / Bn;
        }
        return permute(Q * Bn, {1, 0});
    };
    b.row(
        "sinkhorn", str("B", queue + B, " K", K), 8.0 * (queue + B) * K, "GB/s", [&] { ssl::sinkhorn(scores); },
        generic_sinkhorn);
}

void bench_infonce(Bench& b, int64_t B, int64_t Kq, int64_t D) {
    Tensor q = l2_normalize(rand_on({B, D}, 6, b.dev) - 0.5).detach().requires_grad_();
    Tensor k = l2_normalize(rand_on({B, D}, 7, b.dev) - 0.5), queue = l2_normalize(rand_on({Kq, D}, 8, b.dev) - 0.5);
    Tensor labels = zeros({B}, DType::i64, b.dev);
    b.row(
        "infonce fwd+bwd", str("B", B, " queue", Kq, "x", D), 4.0 * B * Kq * D, "GF/s",
        [&] { ssl::infonce_loss(q, k, queue, 0.2).backward(); },
        [&] {
            Tensor logits = concat({sum(q * k, 1, true), matmul(q, queue, false, true)}, -1) / 0.2;
            cross_entropy(logits, labels).backward();
        });
}

// ViT-Tiny/16 + the DINO head (K = 65536): the teacher's parameter list (158 tensors, 27.3M parameters).
std::vector<int64_t> vit_tiny_dino() {
    std::vector<int64_t> n = {192 * 3 * 16 * 16, 192, 192, 197 * 192};
    for (int blk = 0; blk < 12; ++blk)
        n.insert(n.end(), {192, 192, 576 * 192, 576, 192 * 192, 192, 192, 192, 768 * 192, 768, 192 * 768, 192});
    n.insert(n.end(), {192, 192, 2048 * 192, 2048, 2048 * 2048, 2048, 256 * 2048, 256, 65536, 65536 * 256});
    return n;
}

void bench_ema(Bench& b) {
    std::vector<Tensor> t, s;
    std::vector<Tensor*> tp, sp;
    int64_t total = 0;
    for (int64_t n : vit_tiny_dino()) {
        t.push_back(rand_on({n}, 9, b.dev)), s.push_back(rand_on({n}, 10, b.dev));
        total += n;
    }
    for (size_t i = 0; i < t.size(); ++i) tp.push_back(&t[i]), sp.push_back(&s[i]);
    b.row(
        "ema", str("vit_tiny+dino ", t.size(), "t"), 12.0 * total, "GB/s", [&] { ssl::ema_update(tp, sp, 0.996); },
        [&] {
            for (size_t i = 0; i < t.size(); ++i) {
                mul_(t[i], 0.996);
                add_(t[i], s[i], 0.004);
            }
        });
}

void run_all(Bench& b, bool gpu) {
    const int64_t per_gpu = 128;
    bench_dino(b, gpu ? per_gpu : 16, 4096, 8);
    bench_dino(b, gpu ? per_gpu : 2, 65536, 12);
    bench_swav(b, gpu ? per_gpu : 16, 3000, 8, gpu ? 3840 : 240);
    bench_infonce(b, gpu ? per_gpu * 7 : 64, 65536, 128);
    bench_ema(b);
}

}  // namespace

int main(int argc, char** argv) {
    bool csv = false, cpu = true, gpu = true;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--csv")) csv = true;
        if (!std::strcmp(argv[i], "--cpu-only")) gpu = false;
        if (!std::strcmp(argv[i], "--gpu-only")) cpu = false;
    }
    bench::Table table(csv);
    if (cpu) {
        Bench b{table, Device::cpu(), 1, 3};
        run_all(b, false);
    }
    if (gpu && runtime::cuda_device_count() > 0) {
        Bench b{table, Device::cuda(0), 3, 10};
        run_all(b, true);
    } else if (gpu && !csv) {
        std::printf("GPU part skipped: %s\n", runtime::cuda_unavailable_reason().c_str());
    }
    table.print("SSL losses (fused kernels) vs the same formulas with generic engine ops (median)");
    return 0;
}
