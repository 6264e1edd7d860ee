// Weighted kNN (apps/knn.h): one similarity GEMM per block of val rows, a partial sort per row, the votes.
#include "apps/knn.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/nn/layers.h"
#include "engine/ops/matmul.h"
#include "ssl/heads.h"

namespace sslight::apps {
namespace {

std::vector<float> normalised_rows(const Tensor& t) {
    std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
    const int64_t n = t.size(0), d = t.size(1);
    for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < d; ++j) s += double(v[i * d + j]) * v[i * d + j];
        const float inv = static_cast<float>(1.0 / std::max(std::sqrt(s), 1e-12));
        for (int64_t j = 0; j < d; ++j) v[i * d + j] *= inv;
    }
    return v;
}

}  // namespace

KnnResult knn_classify(const Tensor& train, const std::vector<int64_t>& train_labels, const Tensor& val,
                       const std::vector<int64_t>& val_labels, int num_classes, int k, double temperature) {
    SSL_CHECK(train.dim() == 2 && val.dim() == 2 && train.size(1) == val.size(1),
              "knn: features must be [N, D] and [M, D]");
    const int64_t n = train.size(0), m = val.size(0), d = train.size(1);
    SSL_CHECK(static_cast<int64_t>(train_labels.size()) == n && static_cast<int64_t>(val_labels.size()) == m,
              "knn: one label per feature row expected");
    SSL_CHECK(k >= 1 && temperature > 0 && num_classes >= 1, "knn: k >= 1, T > 0 expected");
    const int kk = static_cast<int>(std::min<int64_t>(k, n));
    NoGradGuard ng;
    const Tensor tr = from_vector(normalised_rows(train), {n, d});
    const Tensor va = from_vector(normalised_rows(val), {m, d});
    const std::vector<float> sim = matmul(va, tr, false, true).to_vector<float>();  // [M, N]
    KnnResult r;
    r.count = m;
    std::vector<int64_t> idx(n);
    std::vector<double> votes(num_classes);
    for (int64_t i = 0; i < m; ++i) {
        const float* s = sim.data() + i * n;
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(),
                          [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
        std::fill(votes.begin(), votes.end(), 0.0);
        for (int j = 0; j < kk; ++j) {
            const int64_t lab = train_labels[idx[j]];
            SSL_CHECK(lab >= 0 && lab < num_classes, "knn: train label ", lab, " outside [0, ", num_classes, ")");
            votes[lab] += std::exp(s[idx[j]] / temperature);
        }
        std::vector<int> order(num_classes);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return votes[a] > votes[b]; });
        r.top1 += order[0] == val_labels[i];
        for (int j = 0; j < std::min(5, num_classes); ++j) r.top5 += order[j] == val_labels[i];
    }
    r.top1 /= static_cast<double>(m);
    r.top5 /= static_cast<double>(m);
    return r;
}

Tensor extract_features(models::Backbone& backbone, const ImageSet& set, Device device, int batch) {
    NoGradGuard ng;
    const bool was_training = backbone.is_training();
    backbone.eval();
    const int64_t s = set.size, per = s * s * 3;
    std::vector<Tensor> parts;
    std::vector<float> out;
    int64_t dim = 0;
    for (int64_t b0 = 0; b0 < set.count(); b0 += batch) {
        const int64_t nb = std::min<int64_t>(batch, set.count() - b0);
        std::vector<uint8_t> px(set.pixels.begin() + b0 * per, set.pixels.begin() + (b0 + nb) * per);
        Tensor u8 = from_vector(px, {nb, s, s, 3});
        Tensor x = data::augment_group(u8, std::vector<data::AugmentParams>(static_cast<size_t>(nb)), device);
        Tensor f = backbone.forward_features(x).to(Device::cpu());
        dim = f.size(1);
        std::vector<float> fv = f.to_vector<float>();
        out.insert(out.end(), fv.begin(), fv.end());
    }
    backbone.train(was_training);
    return from_vector(out, {set.count(), dim});
}

namespace {

std::vector<nn::BatchNorm*> batch_norms(models::Backbone& backbone) {
    std::vector<nn::BatchNorm*> out;
    for (auto& [name, m] : backbone.named_modules())
        if (auto* bn = dynamic_cast<nn::BatchNorm*>(m)) out.push_back(bn);
    return out;
}

}  // namespace

std::vector<Tensor> recalibrate_batch_norm(models::Backbone& backbone, const ImageSet& set, Device device,
                                           int batch) {
    NoGradGuard ng;
    const std::vector<nn::BatchNorm*> bns = batch_norms(backbone);
    std::vector<Tensor> saved;
    if (bns.empty()) return saved;  // a ViT: nothing to re-estimate (and no train-mode forward, no drop path)
    std::vector<BatchNormArgs> args;
    for (nn::BatchNorm* bn : bns) {
        saved.push_back(bn->running_mean.clone());
        saved.push_back(bn->running_var.clone());
        saved.push_back(bn->num_batches_tracked.clone());  // a host counter the train-mode forwards advance
        args.push_back(bn->args);
        bn->args.all_reduce = nullptr;
    }
    const bool was_training = backbone.is_training();
    backbone.train();
    const int64_t s = set.size, per = s * s * 3;
    int64_t k = 0;
    for (int64_t b0 = 0; b0 + 1 < set.count(); b0 += batch, ++k) {
        const int64_t nb = std::min<int64_t>(batch, set.count() - b0);
        for (nn::BatchNorm* bn : bns) bn->args.momentum = 1.0 / double(k + 1);  // running = mean of the batches
        std::vector<uint8_t> px(set.pixels.begin() + b0 * per, set.pixels.begin() + (b0 + nb) * per);
        const Tensor x = data::augment_group(from_vector(px, {nb, s, s, 3}),
                                             std::vector<data::AugmentParams>(static_cast<size_t>(nb)), device);
        backbone.forward_features(x);
    }
    for (size_t i = 0; i < bns.size(); ++i) bns[i]->args = args[i];
    backbone.train(was_training);
    return saved;
}

void restore_batch_norm(models::Backbone& backbone, const std::vector<Tensor>& saved) {
    NoGradGuard ng;
    const std::vector<nn::BatchNorm*> bns = batch_norms(backbone);
    SSL_CHECK(saved.size() == 3 * bns.size(), "restore_batch_norm: ", saved.size(), " saved tensors for ",
              bns.size(), " BatchNorms");
    for (size_t i = 0; i < bns.size(); ++i) {
        ssl::assign_(bns[i]->running_mean, saved[3 * i]);
        ssl::assign_(bns[i]->running_var, saved[3 * i + 1]);
        bns[i]->num_batches_tracked.data<int64_t>()[0] = saved[3 * i + 2].data<int64_t>()[0];
    }
}

}  // namespace sslight::apps
