// The SSL heads (ssl/heads.h): DINOHead with its weight-normalised last layer y = (x̂·v̂ᵀ)·g, the MoCo / SwAV
// projection MLPs, the backbone + head wrapper, and the shared method helpers (λ's from the recipe, view checks,
// make_method).
// All differentiable through the engine ops; the in-place assign_ records nothing.
#include "ssl/heads.h"

#include <cmath>

#include "data/recipe.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/random.h"
#include "ssl/dino.h"
#include "ssl/method.h"
#include "ssl/moco.h"
#include "ssl/swav.h"

namespace sslight::ssl {

WeightNormLinear::WeightNormLinear(int64_t in, int64_t out, bool frozen) : Module("WeightNormLinear"),
                                                                           frozen_norm(frozen) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    Tensor v = empty({out, in});
    uniform_(v, -bound, bound, nn::init_generator().next());
    register_parameter("weight_g", &weight_g, ones({out, 1}));
    register_parameter("weight_v", &weight_v, v);
    if (frozen_norm) weight_g.requires_grad_(false);
}

Tensor WeightNormLinear::forward(const Tensor& x) {
    Tensor y = linear(x, l2_normalize(weight_v));
    if (frozen_norm) return y;
    return mul(y, weight_g.reshape({weight_g.numel()}));
}

DinoHead::DinoHead(int64_t in, int64_t out, bool use_bn, bool norm_last_layer, int64_t hidden, int64_t bottleneck)
    : Module("DINOHead") {
    mlp = std::make_shared<nn::Sequential>();
    const int64_t dims[3][2] = {{in, hidden}, {hidden, hidden}, {hidden, bottleneck}};
    for (int i = 0; i < 3; ++i) {
        auto lin = std::make_shared<nn::Linear>(dims[i][0], dims[i][1]);
        trunc_normal_(lin->weight, 0.0, 0.02, -2.0, 2.0, nn::init_generator().next());
        constant_(lin->bias, 0.0);
        mlp->push_back(lin);
        if (i == 2) break;
        if (use_bn) mlp->push_back(std::make_shared<nn::BatchNorm>(dims[i][1], false));
        mlp->push_back(std::make_shared<nn::GELU>());
    }
    register_module("mlp", mlp);
    last_layer = register_module("last_layer", std::make_shared<WeightNormLinear>(bottleneck, out, norm_last_layer));
}

Tensor DinoHead::forward(const Tensor& x) { return last_layer->forward(l2_normalize(mlp->forward(x))); }

std::shared_ptr<nn::Sequential> make_projection(int64_t in, int64_t hidden, int64_t out, bool use_bn) {
    auto seq = std::make_shared<nn::Sequential>();
    seq->push_back(std::make_shared<nn::Linear>(in, hidden));
    if (use_bn) seq->push_back(std::make_shared<nn::BatchNorm>(hidden, false));
    seq->push_back(std::make_shared<nn::ReLU>());
    seq->push_back(std::make_shared<nn::Linear>(hidden, out));
    return seq;
}

void init_linears_normal(nn::Module& m, double std) {
    for (auto& [name, mod] : m.named_modules()) {
        auto* lin = dynamic_cast<nn::Linear*>(mod);
        if (!lin) continue;
        normal_(lin->weight, 0.0, std, nn::init_generator().next());
        if (lin->bias.defined()) constant_(lin->bias, 0.0);
    }
}

BackboneWithHead::BackboneWithHead(std::shared_ptr<models::Backbone> b, std::shared_ptr<nn::Module> h)
    : Module("MultiCropWrapper") {
    backbone = register_module("backbone", std::move(b));
    head = register_module("head", std::move(h));
}

Tensor BackboneWithHead::forward_groups(const std::vector<Tensor>& groups) {
    std::vector<Tensor> feats;
    for (const Tensor& g : groups)
        if (g.defined() && g.numel() > 0) feats.push_back(backbone->forward_features(g));
    SSL_CHECK(!feats.empty(), "BackboneWithHead: no views");
    last_features = feats[0].detach();
    return head->forward(feats.size() == 1 ? feats[0] : concat(feats, 0));
}

void assign_(Tensor& dst, const Tensor& src) {
    NoGradGuard guard;
    check_same_shape("assign_", dst, src);
    mul_(dst, 0.0);
    add_(dst, src.detach());
}

bool is_vit(const std::string& backbone) { return backbone.rfind("vit", 0) == 0; }

std::pair<double, double> method_loss_weights(const MethodConfig& c, int n_local) {
    if (!std::isnan(c.lambda_gg) || !std::isnan(c.lambda_gl)) {
        SSL_CHECK_T(ConfigError, !std::isnan(c.lambda_gg) && !std::isnan(c.lambda_gl),
                    "MethodConfig: set both lambda_gg and lambda_gl or neither");
        return {c.lambda_gg, c.lambda_gl};
    }
    // Without locals the global-global pairs are the whole loss (SSLight's fixed 0.4 would only scale it down,
    // which for SGD is a 0.4x learning rate).
    if (n_local == 0) return {1.0, 0.0};
    const data::Method m = c.method == "dino" ? data::Method::dino
                         : c.method == "swav" ? data::Method::swav : data::Method::moco;
    data::ViewRecipe r = data::make_recipe(m, is_vit(c.backbone) ? data::Arch::vit : data::Arch::cnn, c.sslight);
    const data::ViewSpec local = r.locals.at(0);
    r.locals.assign(static_cast<size_t>(n_local), local);
    const data::LossWeights w = data::loss_weights(r);
    return {w.gg, w.gl};
}

void check_views(const char* method, const Views& v) {
    SSL_CHECK_T(ConfigError, v.batch > 0 && v.n_global == 2 && v.n_local >= 0, method,
                ": views need batch > 0 and 2 global crops (got batch ", v.batch, ", n_global ", v.n_global,
                ", n_local ", v.n_local, ")");
    SSL_CHECK_SHAPE(!v.groups.empty() && v.groups[0].defined() && v.groups[0].size(0) == 2 * v.batch, method,
                    ": groups[0] must hold the 2 global crops (", 2 * v.batch, " rows)");
    const int64_t local_rows = v.groups.size() > 1 && v.groups[1].defined() ? v.groups[1].size(0) : 0;
    SSL_CHECK_SHAPE(local_rows == v.n_local * v.batch && v.groups.size() <= 2, method, ": groups[1] must hold ",
                    v.n_local, " local crops (", v.n_local * v.batch, " rows), got ", local_rows);
}

std::shared_ptr<Method> make_method(const MethodConfig& c) {
    if (c.method == "dino") return std::make_shared<Dino>(c);
    if (c.method == "swav") return std::make_shared<Swav>(c);
    if (c.method == "moco") return std::make_shared<MocoV2>(c);
    SSL_CHECK_T(ConfigError, false, "make_method: unknown method '", c.method, "' (known: dino, swav, moco)");
    return nullptr;
}

}  // namespace sslight::ssl
