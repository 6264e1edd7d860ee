// The online linear probe (ssl/online_probe.h): BN (the feature scale drifts while the backbone trains, a fixed-lr
// linear layer would chase it) then Linear with SPEC §6's N(0, 0.01) init, cross-entropy on detached features.
#include "ssl/online_probe.h"

#include <vector>

#include "engine/check.h"
#include "engine/ops/softmax.h"
#include "ssl/heads.h"
#include "ssl/method.h"

namespace sslight::ssl {

OnlineProbe::OnlineProbe(int64_t feature_dim, int64_t classes) : Module("OnlineProbe"), classes_(classes) {
    SSL_CHECK(feature_dim > 0 && classes >= 2, "OnlineProbe: needs feature_dim > 0 and >= 2 classes, got ",
              feature_dim, " and ", classes);
    norm = register_module("norm", std::make_shared<nn::BatchNorm>(feature_dim, /*two_d=*/false));
    linear = register_module("linear", std::make_shared<nn::Linear>(feature_dim, classes));
    init_linears_normal(*this, 0.01);
}

Tensor OnlineProbe::forward(const Tensor& features) { return linear->forward(norm->forward(features)); }

OnlineProbe::Step OnlineProbe::forward_loss(const Tensor& features, const Tensor& labels) {
    SSL_CHECK(features.defined() && features.dim() == 2 && labels.defined() && labels.dim() == 1,
              "OnlineProbe: expected features [n*B, D] and labels [B] (the method recorded no features?)");
    const int64_t B = labels.numel(), rows = features.size(0);
    SSL_CHECK(B > 0 && rows % B == 0, "OnlineProbe: ", rows, " feature rows are not a whole number of views of ", B,
              " labels");
    const std::vector<int64_t> one = labels.to(Device::cpu()).to_vector<int64_t>();
    std::vector<int64_t> all;
    all.reserve(size_t(rows));
    for (int64_t v = 0; v < rows / B; ++v) all.insert(all.end(), one.begin(), one.end());
    for (int64_t y : all)
        SSL_CHECK(y >= 0 && y < classes_, "OnlineProbe: label ", y, " is outside the probe's ", classes_, " classes");
    const Tensor target = from_vector(all, {rows}, features.device());
    Step s;
    const Tensor logits = forward(features.detach());
    s.loss = cross_entropy(logits, target);
    s.correct = count_top1(logits, target);
    s.rows = rows;
    return s;
}

void Method::enable_online_probe(int64_t classes) {
    SSL_CHECK(!online_probe, "enable_online_probe: the method already has a probe");
    online_probe = register_module("online_probe",
                                   std::make_shared<OnlineProbe>(student_backbone().feature_dim(), classes));
}

int64_t count_top1(const Tensor& logits, const Tensor& labels) {
    SSL_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.numel() == logits.size(0),
              "count_top1: expected logits [N, C] and labels [N]");
    const int64_t N = logits.size(0), C = logits.size(1);
    const std::vector<float> l = logits.detach().to(DType::f32).to(Device::cpu()).to_vector<float>();
    const std::vector<int64_t> y = labels.to(Device::cpu()).to_vector<int64_t>();
    int64_t hits = 0;
    for (int64_t i = 0; i < N; ++i) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; ++c)
            if (l[size_t(i * C + c)] > l[size_t(i * C + best)]) best = c;
        hits += best == y[size_t(i)];
    }
    return hits;
}

}  // namespace sslight::ssl
