// Weighted kNN classification (SPEC.md §6, DINO's knn_classifier): features L2-normalised, sim = cosine,
// the k most similar train samples vote for their class with weight exp(sim / T); the prediction is the class
// with the largest vote (ties: the lower class). Also the backbone feature extractor the kNN monitor uses
// (eval mode, no gradients). Nothing here records gradients.
#pragma once
#include <cstdint>
#include <vector>

#include "apps/embedded_data.h"
#include "engine/tensor.h"
#include "models/backbone.h"

namespace sslight::apps {

struct KnnResult {
    double top1 = 0, top5 = 0;  // fractions in [0, 1]
    int64_t count = 0;
};

// train: [N, D], val: [M, D] (f32 CPU; normalised here), labels in [0, num_classes).
KnnResult knn_classify(const Tensor& train, const std::vector<int64_t>& train_labels, const Tensor& val,
                       const std::vector<int64_t>& val_labels, int num_classes, int k = 20, double temperature = 0.07);

// Pooled backbone features [N, D] (f32 CPU) of a set's images, normalised with ImageNet mean/std, no crop, in
// batches of `batch`, with the backbone in eval mode (its mode is restored afterwards).
Tensor extract_features(models::Backbone& backbone, const ImageSet& set, Device device, int batch = 250);

// "Precise BN": the BatchNorm running statistics re-estimated as the plain average of the batch statistics of
// `set` (its images as extract_features sees them), with no gradients and no cross-rank synchronisation. A
// random-init backbone's statistics (0, 1) and a trained one's (an EMA over augmented, mixed-size training
// views) both differ from those of clean images; re-estimating both compares the weights alone. Returns the
// previous statistics, which restore_batch_norm puts back.
std::vector<Tensor> recalibrate_batch_norm(models::Backbone& backbone, const ImageSet& set, Device device,
                                           int batch = 250);
void restore_batch_norm(models::Backbone& backbone, const std::vector<Tensor>& saved);

}  // namespace sslight::apps
