// SwAV's step around ssl::sinkhorn and ssl::swav_loss (ssl/swav.h): scores = prototypes(normalize(head(f))),
// codes from the detached scores (+ queue scores) per global crop, swapped prediction with the λ's.
#include "ssl/swav.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "ssl/losses.h"

namespace sslight::ssl {

Swav::Swav(const MethodConfig& c) : Method("SwAV"), config_(c) {
    SSL_CHECK_T(ConfigError, c.swav_prototypes > 0 && c.sinkhorn_iters > 0 && c.sinkhorn_eps > 0,
                "SwAV: prototypes, Sinkhorn iterations and ε must be positive");
    backbone = register_module("backbone", models::make_backbone(c.backbone, c.backbone_options));
    projection_head = register_module(
        "projection_head", make_projection(backbone->feature_dim(), c.swav_hidden_dim, c.swav_out_dim, true));
    prototypes = register_module("prototypes", std::make_shared<nn::Linear>(c.swav_out_dim, c.swav_prototypes, false));
    init_linears_normal(*projection_head, 0.01);
    init_linears_normal(*prototypes, 0.01);
}

int64_t Swav::queue_length(int64_t global_batch) const {
    return config_.swav_queue_length - config_.swav_queue_length % global_batch;
}

void Swav::normalize_prototypes() {
    NoGradGuard guard;
    assign_(prototypes->weight, l2_normalize(prototypes->weight.detach()));
}

Tensor Swav::forward_loss(const Views& v, const StepContext& ctx) {
    check_views("SwAV", v);
    const auto [lgg, lgl] = method_loss_weights(config_, v.n_local);
    const int64_t B = v.batch, global_batch = B * dist.world_size;
    normalize_prototypes();
    if (queue.empty() && config_.swav_queue_length > 0 && ctx.epoch >= config_.swav_queue_start_epoch) {
        const int64_t L = queue_length(global_batch) / dist.world_size;
        SSL_CHECK_T(ConfigError, L > 0, "SwAV: queue length ", config_.swav_queue_length,
                    " is shorter than the global batch ", global_batch);
        for (int i = 0; i < v.n_global; ++i)
            queue.push_back(zeros({L, config_.swav_out_dim}, prototypes->weight.dtype(), prototypes->weight.device()));
    }
    std::vector<Tensor> feats{backbone->forward_features(v.groups[0])};
    if (v.n_local > 0) feats.push_back(backbone->forward_features(v.groups[1]));
    probe_features = feats[0].detach();
    Tensor emb = l2_normalize(projection_head->forward(feats.size() == 1 ? feats[0] : concat(feats, 0)));
    Tensor scores = prototypes->forward(emb);
    std::vector<Tensor> codes;
    {
        NoGradGuard guard;
        for (int i = 0; i < v.n_global; ++i) {
            Tensor out = scores.slice(i * B, (i + 1) * B).detach();
            if (!queue.empty()) {
                Tensor& q = queue[size_t(i)];
                const int64_t L = q.size(0);
                if (!use_the_queue && max(abs(q.slice(L - 1, L))).item() != 0) use_the_queue = true;
                if (use_the_queue)
                    out = concat({matmul(q, prototypes->weight.detach(), false, true), out}, 0);
                Tensor fresh = emb.slice(i * B, (i + 1) * B).detach();
                q = L > B ? concat({fresh, q.slice(0, L - B)}, 0) : fresh.slice(0, L).clone();
            }
            const int64_t rows = out.size(0);
            Tensor c = sinkhorn(out, config_.sinkhorn_eps, config_.sinkhorn_iters, dist.all_reduce_sum,
                                dist.all_reduce_sum ? rows * dist.world_size : 0);
            codes.push_back(c.slice(rows - B, rows).clone());
        }
    }
    last_codes = codes;
    return swav_loss(scores, codes, lgg, lgl, config_.swav_temp);
}

void Swav::before_optimizer_step(const StepContext& ctx) {
    if (ctx.epoch >= config_.freeze_prototypes_epochs) return;
    prototypes->weight.zero_grad();
}

void Swav::after_optimizer_step(const StepContext&) { normalize_prototypes(); }

std::vector<optim::ParamGroup> Swav::param_groups(double lr, double weight_decay) {
    return optim::ssl_param_groups(*this, lr, weight_decay, "online_probe.");
}

}  // namespace sslight::ssl
