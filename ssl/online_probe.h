// The optional online linear probe (SPEC.md §6 as a training-time monitor; solo-learn / MAE style): BatchNorm1d +
// Linear(feature_dim, classes) trained during pre-training on the DETACHED pooled student-backbone features of the
// global views with the images' labels, by its own optimizer. No gradient reaches the backbone, so pre-training is
// exactly what it is without the probe; the probe's running top-1 on the augmented views says, step by step, whether
// the features are becoming linearly separable. Method::enable_online_probe registers it as the method's child
// "online_probe", so checkpoints carry it and data parallel all-reduces its gradients and syncs its BN.
#pragma once
#include <cstdint>
#include <memory>

#include "engine/nn/layers.h"
#include "engine/nn/module.h"

namespace sslight::ssl {

class OnlineProbe : public nn::Module {
public:
    OnlineProbe(int64_t feature_dim, int64_t classes);
    Tensor forward(const Tensor& features) override;  // logits [N, classes]

    // features [n·B, D], view-major (row v·B + b is sample b seen through view v), labels i64 [B] on any device:
    // the mean cross-entropy over the n·B rows (a graph to the probe's own parameters only) and the count of rows
    // whose top-1 is right. Throws naming the shapes when they do not fit.
    struct Step {
        Tensor loss;
        int64_t correct = 0, rows = 0;
    };
    Step forward_loss(const Tensor& features, const Tensor& labels);

    int64_t classes() const { return classes_; }

    std::shared_ptr<nn::BatchNorm> norm;
    std::shared_ptr<nn::Linear> linear;

private:
    int64_t classes_;
};

// Top-1 hits of logits [N, C] against labels [N] (any device; read back to the host).
int64_t count_top1(const Tensor& logits, const Tensor& labels);

}  // namespace sslight::ssl
