// DINO (SPEC.md §4): student = backbone + DINOHead on every crop, teacher = an EMA copy on the 2 global crops
// (no gradients; it runs in train mode like DINO's, so its BatchNorms use batch statistics and keep their own
// running statistics — the EMA covers parameters only). L = ssl::dino_loss with the per-epoch teacher
// temperature; after the step the centre c ← 0.9c + 0.1·(global mean of the teacher outputs) and the teacher
// ← m·teacher + (1 − m)·student with m cosine 0.996 → 1 per iteration. Last-layer gradients dropped in epoch 0.
#pragma once
#include <memory>
#include <vector>

#include "ssl/heads.h"
#include "ssl/method.h"

namespace sslight::ssl {

class Dino : public Method {
public:
    explicit Dino(const MethodConfig& config);

    Tensor forward_loss(const Views& views, const StepContext& ctx) override;
    void before_optimizer_step(const StepContext& ctx) override;
    void after_optimizer_step(const StepContext& ctx) override;
    std::vector<optim::ParamGroup> param_groups(double lr, double weight_decay) override;
    models::Backbone& student_backbone() override { return *student->backbone; }

    double teacher_temp(int64_t epoch) const;        // the per-epoch table, clamped to its last epoch
    double teacher_momentum(const StepContext& ctx);  // the per-iteration cosine schedule

    std::shared_ptr<BackboneWithHead> student, teacher;
    DinoHead& student_head() { return static_cast<DinoHead&>(*student->head); }
    DinoHead& teacher_head() { return static_cast<DinoHead&>(*teacher->head); }
    Tensor center;        // buffer [K], f32
    Tensor last_teacher_mean;  // this rank's teacher mean from the last forward_loss (the centre's input)

private:
    MethodConfig config_;
    std::vector<double> temp_table_, momentum_table_;
    int64_t momentum_iters_ = -1, last_rows_ = 0;
};

}  // namespace sslight::ssl
