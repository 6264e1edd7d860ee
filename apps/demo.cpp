// MLP (2 -> H -> H -> 3, ReLU) on a 3-class spiral, trained with minibatch SGD + momentum, entirely
// through the engine's ops and autograd, on the CPU or a GPU.
#include "apps/demo.h"

#include <chrono>
#include <cmath>
#include <iomanip>
#include <ostream>
#include <random>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/softmax.h"
#include "engine/random.h"

namespace sslight::apps {
namespace {

constexpr int kClasses = 3;

struct Spiral {
    std::vector<float> xy;        // (N, 2)
    std::vector<int64_t> labels;  // (N)
};

// Three interleaved arms: class k at angle 2πk/3 + 4t, radius t, with Gaussian jitter.
Spiral make_spiral(int per_class, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> noise(0.f, 0.2f);
    Spiral s;
    for (int k = 0; k < kClasses; ++k) {
        for (int i = 0; i < per_class; ++i) {
            const float t = static_cast<float>(i) / static_cast<float>(per_class);
            const float theta = 2.f * 3.14159265f * k / kClasses + 4.f * t + noise(rng) * t;
            s.xy.push_back(t * std::cos(theta));
            s.xy.push_back(t * std::sin(theta));
            s.labels.push_back(k);
        }
    }
    return s;
}

struct Mlp {
    std::vector<Tensor> params;  // W1, b1, W2, b2, W3, b3
    std::vector<Tensor> velocity;

    Mlp(int hidden, Generator& gen, Device dev) {
        const int64_t dims[4] = {2, hidden, hidden, kClasses};
        for (int l = 0; l < 3; ++l) {
            Tensor w = empty({dims[l + 1], dims[l]});
            kaiming_normal_(w, dims[l], gen.next());  // fan_in for a small MLP
            params.push_back(w.to(dev).requires_grad_());
            params.push_back(zeros({dims[l + 1]}, DType::f32, dev).requires_grad_());
        }
        for (const Tensor& p : params) velocity.push_back(zeros_like(p));
    }

    Tensor forward(const Tensor& x) const {
        Tensor h = relu(linear(x, params[0], params[1]));
        h = relu(linear(h, params[2], params[3]));
        return linear(h, params[4], params[5]);
    }

    void sgd_step(double lr, double momentum) {
        NoGradGuard ng;
        for (size_t i = 0; i < params.size(); ++i) {
            mul_(velocity[i], momentum);
            add_(velocity[i], params[i].grad());
            add_(params[i], velocity[i], -lr);
            params[i].zero_grad();
        }
    }
};

double accuracy(const Tensor& logits, const std::vector<int64_t>& labels) {
    std::vector<float> v = logits.detach().to_vector<float>();
    int64_t correct = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
        int best = 0;
        for (int k = 1; k < kClasses; ++k)
            if (v[i * kClasses + k] > v[i * kClasses + best]) best = k;
        correct += best == labels[i];
    }
    return static_cast<double>(correct) / static_cast<double>(labels.size());
}

}  // namespace

DemoResult run_mlp_demo(const DemoConfig& cfg, std::ostream* log) {
    SSL_CHECK(cfg.steps > 0 && cfg.batch > 0 && cfg.hidden > 0 && cfg.points_per_class > 0,
              "demo: steps, batch, hidden and points must be positive");
    const Spiral data = make_spiral(cfg.points_per_class, cfg.seed);
    const int64_t n = static_cast<int64_t>(data.labels.size());
    Generator gen(cfg.seed);
    Mlp mlp(cfg.hidden, gen, cfg.device);
    std::mt19937_64 rng(cfg.seed + 1);
    std::uniform_int_distribution<int64_t> pick(0, n - 1);

    DemoResult r;
    std::vector<double> losses;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> bx(static_cast<size_t>(cfg.batch) * 2);
    std::vector<int64_t> by(cfg.batch);
    for (int step = 1; step <= cfg.steps; ++step) {
        for (int i = 0; i < cfg.batch; ++i) {
            const int64_t j = pick(rng);
            bx[2 * i] = data.xy[2 * j];
            bx[2 * i + 1] = data.xy[2 * j + 1];
            by[i] = data.labels[j];
        }
        Tensor x = from_vector(bx, {cfg.batch, 2}).to(cfg.device);
        Tensor y = from_vector(by, {cfg.batch}).to(cfg.device);
        Tensor loss = cross_entropy(mlp.forward(x), y);
        loss.backward();
        mlp.sgd_step(cfg.lr, cfg.momentum);
        losses.push_back(loss.item());

        if (log && cfg.log_every > 0 && (step % cfg.log_every == 0 || step == cfg.steps)) {
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double sps = static_cast<double>(step) * cfg.batch / secs;
            const double eta = secs / step * (cfg.steps - step);
            *log << "step " << std::setw(5) << step << "/" << cfg.steps << "  loss " << std::fixed
                 << std::setprecision(4) << losses.back() << "  " << std::setprecision(0) << sps
                 << " samples/s  ETA " << std::setprecision(1) << eta << " s" << std::endl;
        }
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.samples_per_second = static_cast<double>(cfg.steps) * cfg.batch / r.seconds;
    r.first_loss = losses.front();
    const size_t w = losses.size() < 20 ? losses.size() : 20;
    for (size_t i = 0; i < w; ++i) r.final_loss += losses[losses.size() - 1 - i] / w;
    NoGradGuard ng;
    r.accuracy = accuracy(mlp.forward(from_vector(data.xy, {n, 2}).to(cfg.device)), data.labels);
    return r;
}

}  // namespace sslight::apps
