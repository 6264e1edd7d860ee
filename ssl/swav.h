// SwAV (SPEC.md §4): one network, backbone + projection_head (Linear(d,4096) BN1d ReLU Linear(4096,128)),
// L2-normalise, prototypes Linear(128, 3000, no bias); every linear N(0, 0.01), biases 0 (the SSLight code's SwAV
// init). Prototype rows are L2-normalised at the start of every forward_loss (and after each step). Codes per
// global crop from ssl::sinkhorn on the detached scores, with the queue's scores prepended once it is full (SwAV's
// rule); L = ssl::swav_loss. Gradients reach every parameter through the scores (codes are constants);
// prototype gradients are dropped during the first freeze_prototypes_epochs epochs.
#pragma once
#include <memory>
#include <vector>

#include "ssl/heads.h"
#include "ssl/method.h"

namespace sslight::ssl {

class Swav : public Method {
public:
    explicit Swav(const MethodConfig& config);

    Tensor forward_loss(const Views& views, const StepContext& ctx) override;
    void before_optimizer_step(const StepContext& ctx) override;
    void after_optimizer_step(const StepContext& ctx) override;
    std::vector<optim::ParamGroup> param_groups(double lr, double weight_decay) override;
    models::Backbone& student_backbone() override { return *backbone; }

    void normalize_prototypes();
    // The queue length for a global batch: config length rounded down to a multiple of it.
    int64_t queue_length(int64_t global_batch) const;

    std::shared_ptr<models::Backbone> backbone;
    std::shared_ptr<nn::Sequential> projection_head;
    std::shared_ptr<nn::Linear> prototypes;
    // One [L, 128] queue per global crop, newest rows first (SwAV's shift); empty before its start epoch. Not part
    // of the state_dict (SwAV keeps it in a per-rank file).
    std::vector<Tensor> queue;
    bool use_the_queue = false;
    std::vector<Tensor> last_codes;  // the codes of the last forward_loss, one [B, K] per global crop

private:
    MethodConfig config_;
};

}  // namespace sslight::ssl
