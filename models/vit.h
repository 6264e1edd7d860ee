// Vision Transformer (Dosovitskiy et al. 2021) as timm's VisionTransformer is used by DINO (Caron et al. 2021),
// on NHWC images: patch embedding (a stride-p conv) + CLS token + learned position embedding (bicubically
// interpolated for other crop sizes exactly as DINO's interpolate_pos_encoding), pre-norm blocks
// x += drop_path(attn(norm1(x))), x += drop_path(mlp(norm2(x))) with the fused attention op, and a final norm.
// Names and shapes are timm's state_dict minus head.*. Gradients: autograd through the ops (the position
// interpolation is a matmul with a fixed [h0·w0, N] matrix, so its backward is that matrix transposed).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "engine/nn/layers.h"
#include "engine/random.h"
#include "models/backbone.h"
#include "models/flops.h"

namespace sslight::models {

struct VitConfig {
    int64_t img_size = 224;  // the size the position embedding is learned for (grid img_size / patch, square)
    int64_t patch = 16;
    int64_t dim = 192;
    int64_t depth = 12;
    int64_t heads = 3;
    int64_t mlp_ratio = 4;
    double drop_path_rate = 0.0;  // stochastic depth of the last block; block i gets rate · i / (depth - 1)
};

// "vit_tiny" (dim 192, heads 3) or "vit_small" (dim 384, heads 6): patch 16, depth 12, 224 px. ConfigError
// for any other name.
VitConfig vit_config(const std::string& name, double drop_path_rate = 0.0);

// PyTorch's upsample_bicubic (align_corners=False, A = -0.75, border indices clamped) along one axis when the
// caller gives scale_factor: source = (dst + 0.5) / scale_factor - 0.5. Returns the f64 CPU matrix [out, in].
Tensor bicubic_matrix(int64_t in_size, int64_t out_size, double scale_factor);

// DINO's position-grid resize from grid x grid to h0 x w0 with scale factors ((h0 + 0.1) / grid,
// (w0 + 0.1) / grid): the f64 CPU matrix [h0·w0, grid·grid] = kron(rows, cols), rows of the output in
// row-major (h, w) order. ShapeError when floor(grid · factor) would not give back h0 / w0.
Tensor pos_interp_matrix(int64_t grid, int64_t h0, int64_t w0);

// DINO's interpolate_pos_encoding for an image of height x width px: pos_embed [1, 1 + grid², dim] itself
// when the patch count is grid² and height == width, else [1, 1 + h0·w0, dim] (h0 = height / patch,
// w0 = width / patch) with the CLS entry unchanged and the patch grid resized by pos_interp_matrix.
Tensor interpolate_pos_encoding(const Tensor& pos_embed, int64_t height, int64_t width, int64_t patch);

// timm's Attention: qkv (Linear dim -> 3 dim, bias), the fused attention (scale D^-0.5), proj (Linear).
class VitAttention : public nn::Module {
public:
    VitAttention(int64_t dim, int64_t heads);
    Tensor forward(const Tensor& x) override;  // [B, T, dim] -> [B, T, dim]
    std::shared_ptr<nn::Linear> qkv, proj;
    int64_t heads;
};

// timm's Mlp: fc1 (dim -> ratio·dim), exact GELU, fc2.
class VitMlp : public nn::Module {
public:
    VitMlp(int64_t dim, int64_t hidden);
    Tensor forward(const Tensor& x) override;
    std::shared_ptr<nn::Linear> fc1, fc2;
};

// timm's Block (pre-norm, LayerNorm eps 1e-6). Drop-path keys come from `rng` (the owning model's generator),
// two fresh keys per training call when drop_path > 0; none are drawn otherwise.
class VitBlock : public nn::Module {
public:
    VitBlock(int64_t dim, int64_t heads, int64_t mlp_ratio, double drop_path, Generator* rng);
    Tensor forward(const Tensor& x) override;
    std::shared_ptr<nn::LayerNorm> norm1, norm2;
    std::shared_ptr<VitAttention> attn;
    std::shared_ptr<VitMlp> mlp;
    double drop_path;

private:
    Generator* rng_;
};

// The patch embedding module (timm's PatchEmbed): proj, a Conv2d 3 -> dim, kernel = stride = patch, bias.
class PatchEmbed : public nn::Module {
public:
    PatchEmbed(int64_t patch, int64_t dim);
    Tensor forward(const Tensor& x) override { return proj->forward(x); }  // [B, H, W, 3] -> [B, h0, w0, dim]
    std::shared_ptr<nn::Conv2d> proj;
};

class VisionTransformer : public Backbone {
public:
    // Init as timm/DINO: trunc_normal(std 0.02, bounds ±2) for pos_embed, cls_token and every Linear weight,
    // Linear biases 0, LayerNorm weight 1 / bias 0; patch_embed.proj keeps PyTorch's default Conv2d init
    // (kaiming_uniform(a=√5): weight and bias U(±1/√fan_in)), which DINO leaves untouched. All draws from
    // nn::init_generator(); the drop-path generator is seeded from it too.
    explicit VisionTransformer(const VitConfig& config);

    Tensor forward_features(const Tensor& x) override;  // final-norm CLS token [B, dim]
    Tensor forward_map(const Tensor& x) override;       // all final-norm tokens [B, 1 + T, dim]
    int64_t feature_dim() const override { return config_.dim; }
    void count_flops(FlopCounter& fc, int64_t height, int64_t width) override;

    // The final-norm CLS token after each of the last n blocks, oldest first (DINO's get_intermediate_layers
    // followed by [:, 0]): n tensors [B, dim]. 1 <= n <= depth.
    std::vector<Tensor> last_cls_tokens(const Tensor& x, int n);
    // DINO's linear-eval feature: concat(last_cls_tokens(x, n_last_blocks), -1) -> [B, n · dim].
    Tensor linear_probe_features(const Tensor& x, int n_last_blocks = 4);

    // Tokens with position embedding, before the first block: [B, 1 + T, dim].
    Tensor prepare_tokens(const Tensor& x);

    const VitConfig& config() const { return config_; }
    // The drop-path key source (its (seed, counter) is the state a checkpoint saves; reseed per rank if wanted).
    Generator& drop_path_generator() { return rng_; }

    Tensor cls_token, pos_embed;  // [1, 1, dim], [1, 1 + grid², dim]
    std::shared_ptr<PatchEmbed> patch_embed;
    std::vector<std::shared_ptr<VitBlock>> blocks;  // registered as blocks.0 ... blocks.{depth-1}
    std::shared_ptr<nn::LayerNorm> norm;

private:
    Tensor position_embedding(int64_t height, int64_t width);
    Tensor run_blocks(const Tensor& x, int keep_last, std::vector<Tensor>* kept);

    VitConfig config_;
    Generator rng_;
    // pos_interp_matrix per (h0, w0, dtype, device), converted once.
    std::map<std::tuple<int64_t, int64_t, int, std::string>, Tensor> interp_cache_;
};

// "vit_tiny" | "vit_small" at 224 px with the given stochastic-depth rate.
std::shared_ptr<VisionTransformer> make_vit(const std::string& name, double drop_path_rate = 0.0);

}  // namespace sslight::models
