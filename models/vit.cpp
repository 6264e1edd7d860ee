// ViT blocks and the VisionTransformer backbone (timm's definition as DINO uses it), the bicubic position-grid
// resize as a fixed interpolation matrix (PyTorch's upsample_bicubic2d weights, built on the host once per size),
// stochastic depth with a linear rate over depth, and the per-layer FLOP walk. Gradients: autograd through the ops
// (conv2d, linear, layer_norm, attention_qkv, gelu, drop_path, add, concat/split, matmul).
#include "models/vit.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/attention.h"
#include "engine/ops/dropout.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/shape_ops.h"

namespace sslight::models {
namespace {

// PyTorch's cubic convolution kernel (Keys 1981) with A = -0.75 (upsample_bicubic2d's choice).
constexpr double kCubicA = -0.75;
double cubic_near(double x) { return ((kCubicA + 2) * x - (kCubicA + 3)) * x * x + 1; }                  // |x| <= 1
double cubic_far(double x) { return ((kCubicA * x - 5 * kCubicA) * x + 8 * kCubicA) * x - 4 * kCubicA; }  // 1..2

// The CLS token of tokens [B, 1 + T, C] -> [B, C] (a differentiable split; the patch part gets zero gradient).
Tensor cls_of(const Tensor& tokens) {
    const int64_t B = tokens.size(0), T1 = tokens.size(1), C = tokens.size(2);
    return split(tokens.reshape({B, T1 * C}), {C, (T1 - 1) * C}, -1)[0];
}

// [1, 1 + N, C] with the patch rows replaced by matrix [T, N] · patch rows -> [1, 1 + T, C].
Tensor apply_pos_interp(const Tensor& pos_embed, const Tensor& matrix) {
    const int64_t N = pos_embed.size(1) - 1, C = pos_embed.size(2), T = matrix.size(0);
    const Tensor flat = pos_embed.reshape({1 + N, C});
    const Tensor grid = matmul(matrix, flat.slice(1, 1 + N));
    return concat({flat.slice(0, 1), grid}, 0).reshape({1, 1 + T, C});
}

int64_t grid_side(const Tensor& pos_embed) {
    SSL_CHECK_SHAPE(pos_embed.dim() == 3 && pos_embed.size(0) == 1 && pos_embed.size(1) >= 2,
                    "interpolate_pos_encoding: pos_embed must be [1, 1 + N, dim], got ", shape_str(pos_embed.shape()));
    const int64_t N = pos_embed.size(1) - 1;
    const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(N))));
    SSL_CHECK_SHAPE(g * g == N, "interpolate_pos_encoding: ", N, " patch positions are not a square grid");
    return g;
}

// DINO returns the learned embedding unchanged only for the learned patch count on a square image.
bool pos_unchanged(int64_t grid, int64_t height, int64_t width, int64_t patch) {
    return (height / patch) * (width / patch) == grid * grid && height == width;
}

void init_linear(nn::Linear& l, Generator& g) {
    trunc_normal_(l.weight, 0.0, 0.02, -2.0, 2.0, g.next());
    if (l.bias.defined()) constant_(l.bias, 0.0);
}

}  // namespace

VitConfig vit_config(const std::string& name, double drop_path_rate) {
    VitConfig c;
    c.drop_path_rate = drop_path_rate;
    if (name == "vit_tiny") {
        c.dim = 192;
        c.heads = 3;
    } else if (name == "vit_small") {
        c.dim = 384;
        c.heads = 6;
    } else {
        throw ConfigError(str("unknown ViT '", name, "'; expected vit_tiny or vit_small"));
    }
    return c;
}

Tensor bicubic_matrix(int64_t in_size, int64_t out_size, double scale_factor) {
    SSL_CHECK_SHAPE(in_size > 0 && out_size > 0 && scale_factor > 0, "bicubic_matrix: sizes ", in_size, " -> ",
                    out_size, " and scale factor ", scale_factor, " must be positive");
    // area_pixel_compute_scale with the caller's scale factor, then the half-pixel source index (cubic: no clamp
    // at 0) and guard_index_and_lambda, as in PyTorch's UpSampleKernel.cpp.
    const double scale = 1.0 / scale_factor;
    std::vector<double> m(static_cast<size_t>(out_size * in_size), 0.0);
    for (int64_t d = 0; d < out_size; ++d) {
        const double real = scale * (static_cast<double>(d) + 0.5) - 0.5;
        const int64_t idx = std::min(static_cast<int64_t>(std::floor(real)), in_size - 1);
        const double t = std::min(std::max(real - static_cast<double>(idx), 0.0), 1.0);
        const double c[4] = {cubic_far(t + 1), cubic_near(t), cubic_near(1 - t), cubic_far(2 - t)};
        for (int j = 0; j < 4; ++j) {
            const int64_t k = std::min(std::max<int64_t>(idx - 1 + j, 0), in_size - 1);  // border clamp
            m[static_cast<size_t>(d * in_size + k)] += c[j];
        }
    }
    return from_vector(m, {out_size, in_size});
}

Tensor pos_interp_matrix(int64_t grid, int64_t h0, int64_t w0) {
    SSL_CHECK_SHAPE(grid > 0 && h0 > 0 && w0 > 0, "pos_interp_matrix: grid ", grid, " -> ", h0, "x", w0,
                    " must be positive");
    // DINO adds 0.1 so that floor(grid · factor) gives back h0 / w0 despite rounding (dino issue #8); PyTorch then
    // interpolates with the factor itself, not with h0 / grid.
    const double root = std::sqrt(static_cast<double>(grid * grid));
    const double fh = (static_cast<double>(h0) + 0.1) / root, fw = (static_cast<double>(w0) + 0.1) / root;
    SSL_CHECK_SHAPE(static_cast<int64_t>(std::floor(static_cast<double>(grid) * fh)) == h0 &&
                        static_cast<int64_t>(std::floor(static_cast<double>(grid) * fw)) == w0,
                    "pos_interp_matrix: a ", grid, "x", grid, " grid does not resize to ", h0, "x", w0);
    const std::vector<double> rows = bicubic_matrix(grid, h0, fh).to_vector<double>();
    const std::vector<double> cols = bicubic_matrix(grid, w0, fw).to_vector<double>();
    const int64_t N = grid * grid;
    std::vector<double> m(static_cast<size_t>(h0 * w0 * N));
    for (int64_t i = 0; i < h0; ++i)
        for (int64_t j = 0; j < w0; ++j)
            for (int64_t a = 0; a < grid; ++a)
                for (int64_t b = 0; b < grid; ++b)
                    m[static_cast<size_t>((i * w0 + j) * N + a * grid + b)] =
                        rows[static_cast<size_t>(i * grid + a)] * cols[static_cast<size_t>(j * grid + b)];
    return from_vector(m, {h0 * w0, N});
}

Tensor interpolate_pos_encoding(const Tensor& pos_embed, int64_t height, int64_t width, int64_t patch) {
    const int64_t grid = grid_side(pos_embed);
    SSL_CHECK_SHAPE(patch > 0 && height >= patch && width >= patch, "interpolate_pos_encoding: a ", height, "x",
                    width, " image has no ", patch, "-pixel patch");
    if (pos_unchanged(grid, height, width, patch)) return pos_embed;
    const Tensor m = pos_interp_matrix(grid, height / patch, width / patch);
    return apply_pos_interp(pos_embed, m.to(pos_embed.dtype()).to(pos_embed.device()));
}

VitAttention::VitAttention(int64_t dim, int64_t heads_) : nn::Module("Attention"), heads(heads_) {
    qkv = register_module("qkv", std::make_shared<nn::Linear>(dim, 3 * dim, true));
    proj = register_module("proj", std::make_shared<nn::Linear>(dim, dim, true));
}

Tensor VitAttention::forward(const Tensor& x) {
    return proj->forward(attention_qkv(qkv->forward(x), static_cast<int>(heads)));
}

VitMlp::VitMlp(int64_t dim, int64_t hidden) : nn::Module("Mlp") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(dim, hidden, true));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, dim, true));
}

Tensor VitMlp::forward(const Tensor& x) { return fc2->forward(gelu(fc1->forward(x))); }

VitBlock::VitBlock(int64_t dim, int64_t heads, int64_t mlp_ratio, double drop_path_, Generator* rng)
    : nn::Module("Block"), drop_path(drop_path_), rng_(rng) {
    norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(dim, 1e-6));
    attn = register_module("attn", std::make_shared<VitAttention>(dim, heads));
    norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(dim, 1e-6));
    mlp = register_module("mlp", std::make_shared<VitMlp>(dim, mlp_ratio * dim));
}

Tensor VitBlock::forward(const Tensor& x) {
    const bool drop = is_training() && drop_path > 0;
    auto branch = [&](const Tensor& h) { return drop ? sslight::drop_path(h, drop_path, true, rng_->next()) : h; };
    const Tensor y = add(x, branch(attn->forward(norm1->forward(x))));
    return add(y, branch(mlp->forward(norm2->forward(y))));
}

PatchEmbed::PatchEmbed(int64_t patch, int64_t dim) : nn::Module("PatchEmbed") {
    nn::Conv2dOptions o;
    o.stride = static_cast<int>(patch);
    o.bias = true;
    proj = register_module("proj", std::make_shared<nn::Conv2d>(3, dim, static_cast<int>(patch), o));
    // PyTorch's Conv2d.reset_parameters: kaiming_uniform(a=√5) gives U(±1/√fan_in) for weight and bias alike.
    const double bound = 1.0 / std::sqrt(static_cast<double>(3 * patch * patch));
    uniform_(proj->weight, -bound, bound, nn::init_generator().next());
    uniform_(proj->bias, -bound, bound, nn::init_generator().next());
}

VisionTransformer::VisionTransformer(const VitConfig& c) : Backbone("VisionTransformer"), config_(c) {
    SSL_CHECK(c.dim > 0 && c.heads > 0 && c.dim % c.heads == 0 && c.depth > 0 && c.patch > 0 && c.mlp_ratio > 0 &&
                  c.img_size >= c.patch && c.img_size % c.patch == 0,
              "VisionTransformer: inconsistent config (img_size ", c.img_size, ", patch ", c.patch, ", dim ", c.dim,
              ", depth ", c.depth, ", heads ", c.heads, ")");
    SSL_CHECK(c.drop_path_rate >= 0 && c.drop_path_rate < 1,
              "VisionTransformer: drop_path_rate must be in [0, 1), got ", c.drop_path_rate);
    Generator& g = nn::init_generator();
    const int64_t grid = c.img_size / c.patch;
    register_parameter("cls_token", &cls_token, empty({1, 1, c.dim}));
    register_parameter("pos_embed", &pos_embed, empty({1, 1 + grid * grid, c.dim}));
    trunc_normal_(pos_embed, 0.0, 0.02, -2.0, 2.0, g.next());
    trunc_normal_(cls_token, 0.0, 0.02, -2.0, 2.0, g.next());
    patch_embed = register_module("patch_embed", std::make_shared<PatchEmbed>(c.patch, c.dim));
    auto container = std::make_shared<nn::Sequential>();
    for (int64_t i = 0; i < c.depth; ++i) {
        // dpr = torch.linspace(0, drop_path_rate, depth)
        const double rate = c.depth > 1 ? c.drop_path_rate * static_cast<double>(i) / static_cast<double>(c.depth - 1)
                                        : 0.0;
        blocks.push_back(std::make_shared<VitBlock>(c.dim, c.heads, c.mlp_ratio, rate, &rng_));
        container->push_back(blocks.back());
    }
    register_module("blocks", container);
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(c.dim, 1e-6));
    for (auto& [name, m] : named_modules())
        if (auto* l = dynamic_cast<nn::Linear*>(m)) init_linear(*l, g);
    const RngKey k = g.next();
    rng_ = Generator(derive(k.seed, {k.stream, 0x6472'6f70'7061'7468ull}).stream);  // tag "droppath"
}

Tensor VisionTransformer::position_embedding(int64_t height, int64_t width) {
    const int64_t grid = config_.img_size / config_.patch, p = config_.patch;
    if (pos_unchanged(grid, height, width, p)) return pos_embed;
    const auto key = std::make_tuple(height / p, width / p, static_cast<int>(pos_embed.dtype()),
                                     pos_embed.device().str());
    auto it = interp_cache_.find(key);
    if (it == interp_cache_.end()) {
        const Tensor m = pos_interp_matrix(grid, height / p, width / p);
        it = interp_cache_.emplace(key, m.to(pos_embed.dtype()).to(pos_embed.device())).first;
    }
    return apply_pos_interp(pos_embed, it->second);
}

Tensor VisionTransformer::prepare_tokens(const Tensor& x) {
    SSL_CHECK_SHAPE(x.dim() == 4 && x.size(3) == 3 && x.size(1) >= config_.patch && x.size(2) >= config_.patch,
                    "VisionTransformer: input must be NHWC [B, H, W, 3] with H, W >= ", config_.patch, ", got ",
                    shape_str(x.shape()));
    const int64_t B = x.size(0), C = config_.dim;
    const Tensor patches = patch_embed->forward(x);  // [B, h0, w0, C], row-major (h, w) = timm's flatten order
    const int64_t T = patches.size(1) * patches.size(2);
    const Tensor cls = add(zeros({B, C}, x.dtype(), x.device()), cls_token.reshape({C}));  // expand over B
    const Tensor tokens = concat({cls, patches.reshape({B, T * C})}, -1);
    const Tensor pos = position_embedding(x.size(1), x.size(2)).reshape({(1 + T) * C});
    return add(tokens, pos).reshape({B, 1 + T, C});
}

// Runs every block; when `kept` is given, appends the final-norm CLS token after each of the last keep_last.
Tensor VisionTransformer::run_blocks(const Tensor& x, int keep_last, std::vector<Tensor>* kept) {
    Tensor h = prepare_tokens(x);
    const auto depth = static_cast<int64_t>(blocks.size());
    for (int64_t i = 0; i < depth; ++i) {
        h = blocks[static_cast<size_t>(i)]->forward(h);
        // LayerNorm is per token, so norm(tokens)[:, 0] == norm(tokens[:, 0]).
        if (kept && depth - i <= keep_last) kept->push_back(norm->forward(cls_of(h)));
    }
    return h;
}

Tensor VisionTransformer::forward_features(const Tensor& x) { return norm->forward(cls_of(run_blocks(x, 0, nullptr))); }

Tensor VisionTransformer::forward_map(const Tensor& x) { return norm->forward(run_blocks(x, 0, nullptr)); }

std::vector<Tensor> VisionTransformer::last_cls_tokens(const Tensor& x, int n) {
    SSL_CHECK(n >= 1 && n <= config_.depth, "last_cls_tokens: n must be in [1, ", config_.depth, "], got ", n);
    std::vector<Tensor> out;
    run_blocks(x, n, &out);
    return out;
}

Tensor VisionTransformer::linear_probe_features(const Tensor& x, int n_last_blocks) {
    return concat(last_cls_tokens(x, n_last_blocks), -1);
}

void VisionTransformer::count_flops(FlopCounter& fc, int64_t height, int64_t width) {
    const FlopCounter::Hw hw = fc.conv("patch_embed.proj", *patch_embed->proj, {height, width});
    const int64_t C = config_.dim, T1 = 1 + hw.h * hw.w, heads = config_.heads, D = C / heads;
    const int64_t hidden = config_.mlp_ratio * C;
    fc.elementwise("pos_embed", "add", T1 * C, 1, {T1, C});
    for (size_t i = 0; i < blocks.size(); ++i) {
        const std::string p = "blocks." + std::to_string(i);
        const VitBlock& b = *blocks[i];
        fc.elementwise(p + ".norm1", "norm", T1 * C, 2, {T1, C});
        fc.linear(p + ".attn.qkv", *b.attn->qkv, T1);
        fc.matmul(p + ".attn.scores", heads, T1, D, T1);
        fc.elementwise(p + ".attn.softmax", "act", heads * T1 * T1, 1, {heads, T1, T1});
        fc.matmul(p + ".attn.values", heads, T1, T1, D);
        fc.linear(p + ".attn.proj", *b.attn->proj, T1);
        fc.elementwise(p + ".add1", "add", T1 * C, 1, {T1, C});
        fc.elementwise(p + ".norm2", "norm", T1 * C, 2, {T1, C});
        fc.linear(p + ".mlp.fc1", *b.mlp->fc1, T1);
        fc.elementwise(p + ".mlp.act", "act", T1 * hidden, 1, {T1, hidden});
        fc.linear(p + ".mlp.fc2", *b.mlp->fc2, T1);
        fc.elementwise(p + ".add2", "add", T1 * C, 1, {T1, C});
    }
    fc.elementwise("norm", "norm", C, 2, {1, C});  // forward_features normalises the CLS token only
}

std::shared_ptr<VisionTransformer> make_vit(const std::string& name, double drop_path_rate) {
    return std::make_shared<VisionTransformer>(vit_config(name, drop_path_rate));
}

}  // namespace sslight::models
