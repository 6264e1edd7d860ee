// MoCo-v2, multi-crop variant (SPEC.md §4): query encoder = backbone + Linear(d,2048) ReLU Linear(2048,128),
// L2-normalised; key encoder = its EMA (constant m = 0.999), updated at the start of forward_loss, before the
// keys. Key = g1 (key encoder, no grad); queries = g2 and the N locals (query encoder: the backbone runs once on
// g2 and once on the locals). L = λ_gg·InfoNCE(g2) + λ_gl·mean over locals of InfoNCE(l_j), logits
// [q·k, q·queueᵀ]/0.2. After the optimizer step the (all-gathered) keys replace the oldest queue rows (FIFO).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "ssl/heads.h"
#include "ssl/method.h"

namespace sslight::ssl {

class MocoV2 : public Method {
public:
    explicit MocoV2(const MethodConfig& config);

    Tensor forward_loss(const Views& views, const StepContext& ctx) override;
    void after_optimizer_step(const StepContext& ctx) override;
    void check_loaded_state() const override;  // 0 <= queue_ptr < queue length
    std::vector<optim::ParamGroup> param_groups(double lr, double weight_decay) override;
    models::Backbone& student_backbone() override { return *encoder_q->backbone; }

    // Embeddings [N, dim] (L2-normalised) of one image group through either encoder.
    Tensor encode_query(const Tensor& x);
    Tensor encode_key(const Tensor& x);
    int64_t queue_ptr() const;

    std::shared_ptr<BackboneWithHead> encoder_q, encoder_k;  // names "encoder_q.*", "encoder_k.*"
    Tensor queue;       // buffer [Kq, dim], rows L2-normalised
    Tensor queue_ptr_;  // buffer i64 [], the next row to overwrite
    Tensor last_keys;   // this rank's keys of the last forward_loss (enter the queue after the step)
    // Test hook: called right before the keys are computed (after the key encoder's EMA update).
    std::function<void(MocoV2&)> on_keys;

private:
    MethodConfig config_;
};

}  // namespace sslight::ssl
