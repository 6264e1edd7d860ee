// DINO's training step around ssl::dino_loss (ssl/dino.h): student on all crops, EMA teacher (no grad) on the
// globals, centre and EMA updates after the optimizer step. Gradients reach the student's parameters only.
#include "ssl/dino.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/schedule.h"
#include "ssl/losses.h"

namespace sslight::ssl {

namespace {

std::shared_ptr<BackboneWithHead> build(const MethodConfig& c, int64_t out_dim) {
    const bool vit = is_vit(c.backbone);
    auto backbone = models::make_backbone(c.backbone, c.backbone_options);
    auto h = std::make_shared<DinoHead>(backbone->feature_dim(), out_dim, /*use_bn=*/!vit, /*norm_last_layer=*/!vit,
                                        c.dino_hidden_dim, c.dino_bottleneck_dim);
    return std::make_shared<BackboneWithHead>(backbone, h);
}

}  // namespace

Dino::Dino(const MethodConfig& c) : Method("DINO"), config_(c) {
    const bool vit = is_vit(c.backbone);
    const int64_t K = c.dino_out_dim > 0 ? c.dino_out_dim : (vit ? 65536 : 4096);
    SSL_CHECK_T(ConfigError, c.total_epochs > 0, "DINO: total_epochs must be positive, got ", c.total_epochs);
    student = register_module("student", build(c, K));
    models::BackboneOptions teacher_opts = c.backbone_options;
    teacher_opts.drop_path_rate = 0.0;  // DINO: drop path on the student only
    MethodConfig tc = c;
    tc.backbone_options = teacher_opts;
    teacher = register_module("teacher", build(tc, K));
    teacher->load_state_dict(student->state_dict());
    teacher->set_requires_grad(false);
    register_buffer("center", &center, zeros({K}));
    const int warmup = c.warmup_teacher_temp_epochs >= 0 ? c.warmup_teacher_temp_epochs : (vit ? 30 : 50);
    temp_table_ = optim::teacher_temp_schedule(c.warmup_teacher_temp, c.teacher_temp,
                                               std::min(warmup, c.total_epochs), c.total_epochs);
}

double Dino::teacher_temp(int64_t epoch) const {
    const size_t i = static_cast<size_t>(std::clamp<int64_t>(epoch, 0, int64_t(temp_table_.size()) - 1));
    return temp_table_[i];
}

double Dino::teacher_momentum(const StepContext& ctx) {
    SSL_CHECK_T(ConfigError, ctx.iters_per_epoch > 0, "DINO: iters_per_epoch must be positive");
    if (momentum_iters_ != ctx.iters_per_epoch) {
        momentum_table_ = optim::cosine_schedule(config_.momentum_teacher, 1.0, config_.total_epochs,
                                                 ctx.iters_per_epoch);
        momentum_iters_ = ctx.iters_per_epoch;
    }
    const int64_t i = std::clamp<int64_t>(ctx.iteration, 0, int64_t(momentum_table_.size()) - 1);
    return momentum_table_[size_t(i)];
}

Tensor Dino::forward_loss(const Views& v, const StepContext& ctx) {
    check_views("DINO", v);
    const auto [lgg, lgl] = method_loss_weights(config_, v.n_local);
    Tensor s = student->forward_groups(v.groups);
    probe_features = student->last_features;
    Tensor t;
    {
        NoGradGuard guard;
        t = teacher->forward_groups({v.groups[0]});
    }
    DinoLossArgs args;
    args.student_temp = config_.student_temp;
    args.teacher_temp = teacher_temp(ctx.epoch);
    args.lambda_gg = lgg;
    args.lambda_gl = lgl;
    args.n_global = v.n_global;
    const Tensor c = s.device().is_cpu() ? center.to(s.dtype()) : center;  // dino_loss: CPU logits' dtype, CUDA f32
    DinoLossResult r = dino_loss(s, t.detach(), c, args);
    last_teacher_mean = r.teacher_mean.detach();
    last_rows_ = t.size(0);
    return r.loss;
}

void Dino::before_optimizer_step(const StepContext& ctx) {
    if (ctx.epoch >= config_.freeze_last_layer_epochs) return;
    for (Tensor* p : student_head().last_layer->parameters()) p->zero_grad();
}

void Dino::after_optimizer_step(const StepContext& ctx) {
    NoGradGuard guard;
    ema_update(teacher->parameters(), student->parameters(), teacher_momentum(ctx));
    if (!last_teacher_mean.defined()) return;
    Tensor batch_mean = last_teacher_mean.to(DType::f32);
    if (dist.all_reduce_sum) {
        const int64_t K = batch_mean.numel();
        Tensor packed = concat({mul(batch_mean, double(last_rows_)), full({1}, double(last_rows_), DType::f32,
                                                                          batch_mean.device())}, 0);
        dist.all_reduce_sum(packed);
        std::vector<Tensor> parts = split(packed, {K, 1}, 0);
        batch_mean = div(parts[0], parts[1].item());
    }
    mul_(center, config_.center_momentum);
    add_(center, batch_mean.to(center.device()), 1.0 - config_.center_momentum);
    last_teacher_mean = Tensor();
}

std::vector<optim::ParamGroup> Dino::param_groups(double lr, double weight_decay) {
    return optim::ssl_param_groups(*student, lr, weight_decay);
}

}  // namespace sslight::ssl
