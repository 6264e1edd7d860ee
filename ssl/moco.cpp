// MoCo-v2 multi-crop around ssl::infonce_loss (ssl/moco.h). Gradients reach the query encoder only; the key
// encoder is an EMA (ssl::ema_update, parameters only) and the queue a constant buffer.
#include "ssl/moco.h"

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/random.h"
#include "ssl/losses.h"

namespace sslight::ssl {

namespace {

std::shared_ptr<BackboneWithHead> build(const MethodConfig& c) {
    auto backbone = models::make_backbone(c.backbone, c.backbone_options);
    auto head = make_projection(backbone->feature_dim(), c.moco_hidden_dim, c.moco_dim, /*use_bn=*/false);
    return std::make_shared<BackboneWithHead>(backbone, head);
}

}  // namespace

MocoV2::MocoV2(const MethodConfig& c) : Method("MoCoV2"), config_(c) {
    SSL_CHECK_T(ConfigError, c.moco_queue > 0 && c.moco_dim > 0, "MoCo: queue length and dim must be positive");
    SSL_CHECK_T(ConfigError, c.moco_momentum >= 0 && c.moco_momentum <= 1, "MoCo: momentum must be in [0, 1]");
    encoder_q = register_module("encoder_q", build(c));
    encoder_k = register_module("encoder_k", build(c));
    encoder_k->load_state_dict(encoder_q->state_dict());
    encoder_k->set_requires_grad(false);
    Tensor q = randn({c.moco_queue, c.moco_dim}, nn::init_generator().next());
    register_buffer("queue", &queue, l2_normalize(q));
    register_buffer("queue_ptr", &queue_ptr_, zeros({}, DType::i64), /*host=*/true);
}

Tensor MocoV2::encode_query(const Tensor& x) { return l2_normalize(encoder_q->forward_groups({x})); }
Tensor MocoV2::encode_key(const Tensor& x) { return l2_normalize(encoder_k->forward_groups({x})); }

int64_t MocoV2::queue_ptr() const { return queue_ptr_.data<int64_t>()[0]; }  // host buffer, exact (no double)

void MocoV2::check_loaded_state() const {
    const int64_t ptr = queue_ptr(), K = queue.size(0);
    SSL_CHECK_T(IoError, ptr >= 0 && ptr < K, "MoCo: queue_ptr ", ptr, " is outside the queue of ", K,
                " rows (expected 0 <= queue_ptr < ", K, ")");
}

Tensor MocoV2::forward_loss(const Views& v, const StepContext&) {
    check_views("MoCo", v);
    const auto [lgg, lgl] = method_loss_weights(config_, v.n_local);
    const int64_t B = v.batch;
    Tensor k;
    {
        NoGradGuard guard;
        ema_update(encoder_k->parameters(), encoder_q->parameters(), config_.moco_momentum);
        if (on_keys) on_keys(*this);
        k = encode_key(v.groups[0].slice(0, B)).detach();
    }
    const Tensor queue_c = queue.to(k.dtype()).detach();
    const Tensor q2 = encode_query(v.groups[0].slice(B, 2 * B));
    probe_features = encoder_q->last_features;
    Tensor loss = mul(infonce_loss(q2, k, queue_c, config_.moco_temp), lgg);
    if (v.n_local > 0) {
        Tensor ql = encode_query(v.groups[1]);
        const Tensor keys = concat(std::vector<Tensor>(size_t(v.n_local), k), 0);
        loss = add(loss, mul(infonce_loss(ql, keys, queue_c, config_.moco_temp), lgl));
    }
    last_keys = k;
    return loss;
}

void MocoV2::after_optimizer_step(const StepContext&) {
    if (!last_keys.defined()) return;
    NoGradGuard guard;
    Tensor keys = dist.all_gather ? dist.all_gather(last_keys) : last_keys;
    keys = keys.to(queue.dtype()).to(queue.device());
    const int64_t n = keys.size(0), K = queue.size(0), ptr = queue_ptr();
    SSL_CHECK_T(ConfigError, K % n == 0, "MoCo: the queue length (", K, ") must be a multiple of the global batch (",
                n, ")");
    // The graph that read the queue is gone (backward ran), so the oldest rows are overwritten in place;
    // ptr is a multiple of n, so rows [ptr, ptr + n) are inside the queue.
    Tensor rows = queue.slice(ptr, ptr + n);
    runtime::copy(rows.raw_data(), queue.device(), keys.raw_data(), keys.device(), keys.nbytes());
    queue_ptr_.data<int64_t>()[0] = (ptr + n) % K;  // a host buffer: no device round trip
    last_keys = Tensor();
}

std::vector<optim::ParamGroup> MocoV2::param_groups(double lr, double weight_decay) {
    return optim::ssl_param_groups(*encoder_q, lr, weight_decay);
}

}  // namespace sslight::ssl
