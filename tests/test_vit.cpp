// The ViTs (models/vit.h): parameter counts and timm's state_dict names/shapes (listing hashes from the
// plain-torch timm definition in tests/parity/vit_parity.py), init, output shapes at 224/128/96, DINO's bicubic
// position-embedding resize (weights from PyTorch hard-coded), finite-difference gradients of a micro ViT in
// double, drop-path semantics, the safetensors round trip, the linear-probe feature, a training step, FLOPs,
// error paths, and (gpu) CUDA forward/backward against the CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/random.h"
#include "models/vit.h"
#include "models/weights.h"
#include "tests/gradcheck.h"

using namespace sslight;
using namespace sslight::test;
using models::VisionTransformer;
using models::VitConfig;

namespace {

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

std::shared_ptr<VisionTransformer> make(const std::string& name, uint64_t seed, double dpr = 0.0) {
    nn::manual_seed(seed);
    return models::make_vit(name, dpr);
}

// dim 8, depth 2, heads 2 (D = 4), patch 4, learned for 12x12 images (a 3x3 grid).
std::shared_ptr<VisionTransformer> micro(uint64_t seed, double dpr = 0.0) {
    nn::manual_seed(seed);
    VitConfig c;
    c.img_size = 12;
    c.patch = 4;
    c.dim = 8;
    c.depth = 2;
    c.heads = 2;
    c.drop_path_rate = dpr;
    auto m = std::make_shared<VisionTransformer>(c);
    // Non-trivial norms, biases and embeddings so that every term shows in the gradients.
    NoGradGuard ng;
    uint64_t k = 0;
    for (auto& [name, t] : m->named_parameters()) {
        if (name.find("norm") != std::string::npos && name.find("weight") != std::string::npos)
            uniform_(*t, 0.5, 1.5, RngKey{seed, k++});
        else if (t->dim() == 1 || name == "cls_token" || name == "pos_embed")
            uniform_(*t, -0.5, 0.5, RngKey{seed, k++});
    }
    return m;
}

Tensor image(int64_t n, int64_t h, int64_t w, uint64_t seed, DType dt = DType::f32, Device d = Device::cpu()) {
    return rand({n, h, w, 3}, RngKey{seed, 7}, dt, d) * 2.0 - 1.0;
}

void set_precision(nn::Module& m, DType dt) {
    NoGradGuard ng;
    for (Tensor* t : m.parameters()) *t = t->detach().to(dt).requires_grad_();
}

Tensor param(nn::Module& m, const std::string& name) {
    for (auto& [n, t] : m.named_parameters())
        if (n == name) return *t;
    FAIL("no parameter ", name);
    return Tensor();
}

bool bit_equal(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
    const Tensor ca = a.to(Device::cpu()), cb = b.to(Device::cpu());
    return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

double max_abs(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector<double>()) m = std::max(m, std::fabs(v));
    return m;
}

void expect_close_scaled(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
    const double scale = max_abs(ref);
    REQUIRE_MESSAGE(scale > 0, what, ": all-zero reference");
    expect_close(got.to(Device::cpu()), ref, Tol{rel * scale, rel}, what);
}

// The rows of PyTorch's bicubic resize (1.13, float64, align_corners=False) for DINO's scale factors.
void check_bicubic_row(const Tensor& m, int64_t row, int64_t first_col, const std::vector<double>& want) {
    const auto v = m.to_vector<double>();
    const int64_t in = m.size(1);
    for (int64_t c = 0; c < in; ++c) {
        const bool inside = c >= first_col && c < first_col + static_cast<int64_t>(want.size());
        const double w = inside ? want[static_cast<size_t>(c - first_col)] : 0.0;
        CHECK_MESSAGE(std::fabs(v[static_cast<size_t>(row * in + c)] - w) < 1e-14, "row ", row, " col ", c);
    }
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("parameter counts, timm state_dict names and shapes") {
        // (params, listing hash): counted and hashed from vit_parity.py's timm-definition model (150 keys).
        const struct {
            const char* name;
            int64_t params, dim;
            uint64_t hash;
        } cases[] = {{"vit_tiny", 5524416, 192, 0x1f88cbbaca70043eull},
                     {"vit_small", 21665664, 384, 0xbce5c6fec32a9cf0ull}};
        for (const auto& e : cases) {
            INFO(e.name);
            auto m = make(e.name, 0);
            CHECK(m->num_parameters() == e.params);
            CHECK(m->feature_dim() == e.dim);
            const io::TensorMap sd = models::export_state_dict(*m);
            CHECK(sd.size() == 150);
            std::string listing;
            for (const auto& [k, t] : sd) listing += k + ":" + shape_str(t.shape()) + "\n";
            CHECK_MESSAGE(fnv1a(listing) == e.hash, "key/shape listing differs from timm's:\n", listing);
            CHECK(sd.at("patch_embed.proj.weight").shape() == Shape{e.dim, 3, 16, 16});  // OIHW in files
            const auto named = m->named_parameters();
            CHECK(named.front().first == "cls_token");
            CHECK(named[1].first == "pos_embed");
            CHECK(named.back().first == "norm.bias");
            CHECK(m->named_buffers().empty());
        }
    }

    TEST_CASE("init: trunc_normal(0.02) linears and embeddings, zero biases, unit norms, default patch conv") {
        auto m = make("vit_tiny", 3);
        auto stats = [](const Tensor& t) {
            double s = 0, s2 = 0;
            for (double v : t.to_vector<double>()) s += v, s2 += v * v;
            const double n = static_cast<double>(t.numel()), mean = s / n;
            return std::make_pair(mean, std::sqrt(s2 / n - mean * mean));
        };
        for (const char* name : {"blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "pos_embed"}) {
            const auto [mean, sd] = stats(param(*m, name));
            CHECK_MESSAGE(std::fabs(sd - 0.02) < 0.001, name);
            CHECK_MESSAGE(std::fabs(mean) < 0.001, name);
        }
        CHECK(max_abs(param(*m, "blocks.3.attn.proj.bias")) == 0.0);
        CHECK(max_abs(param(*m, "blocks.3.norm2.bias")) == 0.0);
        CHECK(max_abs(param(*m, "blocks.3.norm2.weight") - 1.0) == 0.0);
        CHECK(max_abs(param(*m, "cls_token")) > 0.0);
        const double bound = 1.0 / std::sqrt(768.0);  // fan_in 3·16·16
        const auto [mean, sd] = stats(param(*m, "patch_embed.proj.weight"));
        CHECK(max_abs(param(*m, "patch_embed.proj.weight")) <= bound);
        CHECK(std::fabs(sd - bound / std::sqrt(3.0)) < 0.02 * bound);
        CHECK(max_abs(param(*m, "patch_embed.proj.bias")) <= bound);
        CHECK(max_abs(param(*m, "patch_embed.proj.bias")) > 0.0);
        // The same seed builds the same model.
        CHECK(bit_equal(param(*make("vit_tiny", 3), "blocks.5.mlp.fc1.weight"), param(*m, "blocks.5.mlp.fc1.weight")));
    }

    TEST_CASE("output shapes at 224, 128 and 96; the probe feature is 4 x 192 for ViT-Tiny") {
        NoGradGuard ng;
        auto m = make("vit_tiny", 1);
        m->eval();
        const Tensor map224 = m->forward_map(image(1, 224, 224, 2));
        CHECK(map224.shape() == Shape{1, 197, 192});
        for (int64_t px : {128, 96}) {
            INFO(px);
            const int64_t T1 = 1 + (px / 16) * (px / 16);
            const Tensor x = image(2, px, px, 3);
            const Tensor f = m->forward_features(x), map = m->forward_map(x);
            const Tensor probe = m->linear_probe_features(x);
            CHECK(f.shape() == Shape{2, 192});
            CHECK(map.shape() == Shape{2, T1, 192});
            REQUIRE(probe.shape() == Shape{2, 768});
            const auto fv = f.to_vector<float>(), mv = map.to_vector<float>(), pv = probe.to_vector<float>();
            for (int64_t b = 0; b < 2; ++b)
                for (int64_t c = 0; c < 192; ++c) {
                    // features = CLS row of the map = the last block's slot of the probe feature
                    CHECK(fv[b * 192 + c] == doctest::Approx(mv[(b * T1) * 192 + c]).epsilon(1e-5));
                    CHECK(fv[b * 192 + c] == pv[b * 768 + 576 + c]);
                }
            CHECK(std::all_of(fv.begin(), fv.end(), [](float v) { return std::isfinite(v); }));
            CHECK(m->last_cls_tokens(x, 12).size() == 12);
        }
        CHECK(m->forward_features(image(1, 112, 80, 4)).shape() == Shape{1, 192});  // non-square 7x5 grid
    }

    TEST_CASE("position embedding: identity at 224, PyTorch's bicubic weights with DINO's +0.1 factors") {
        auto m = make("vit_tiny", 1);
        CHECK(models::interpolate_pos_encoding(m->pos_embed, 224, 224, 16).same(m->pos_embed));
        CHECK(models::interpolate_pos_encoding(m->pos_embed, 239, 239, 16).same(m->pos_embed));  // floor: 14x14
        // 14 -> 6 and 14 -> 8 with scale factors 6.1/14 and 8.1/14 (values from torch.nn.functional.interpolate).
        const Tensor m6 = models::bicubic_matrix(14, 6, 6.1 / 14), m8 = models::bicubic_matrix(14, 8, 8.1 / 14);
        check_bicubic_row(m6, 0, 0, {0.33562225472616691, 0.77521975958340139, -0.11084201430956808});
        check_bicubic_row(m6, 3, 6, {-0.08722577550543820, 0.55035815222419315, 0.63633561289271090,
                                     -0.09946798961146541});
        check_bicubic_row(m8, 0, 0, {0.65152552211816472, 0.41172403192452223, -0.06324955404268717});
        check_bicubic_row(m8, 4, 6, {-0.10866769547325106, 0.85318072702331893, 0.29728223593964442,
                                     -0.04179526748971218});
        // 2-D: kron(rows, cols); every row sums to 1 (a constant grid stays constant).
        const Tensor k = models::pos_interp_matrix(14, 6, 8);
        REQUIRE(k.shape() == Shape{48, 196});
        const auto kv = k.to_vector<double>(), r = m6.to_vector<double>(), c = m8.to_vector<double>();
        CHECK(kv[(3 * 8 + 4) * 196 + 7 * 14 + 7] == doctest::Approx(r[3 * 14 + 7] * c[4 * 14 + 7]).epsilon(1e-15));
        for (int64_t i = 0; i < 48; ++i) {
            double s = 0;
            for (int64_t j = 0; j < 196; ++j) s += kv[i * 196 + j];
            CHECK(s == doctest::Approx(1.0).epsilon(1e-12));
        }
        // A non-square image keeps 14 rows but resamples them with the factor 14.1/14: not the identity.
        const Tensor m14 = models::bicubic_matrix(14, 14, 14.1 / 14);
        CHECK(std::fabs(m14.to_vector<double>()[0] - 1.0) > 1e-3);
        const Tensor p = models::interpolate_pos_encoding(m->pos_embed, 224, 96, 16);
        CHECK(p.shape() == Shape{1, 1 + 14 * 6, 192});
        CHECK(bit_equal(p.reshape({-1}).slice(0, 192), m->pos_embed.reshape({-1}).slice(0, 192)));  // CLS entry
        CHECK_THROWS_AS(models::interpolate_pos_encoding(zeros({1, 11, 4}), 32, 32, 16), ShapeError);
        CHECK_THROWS_AS(models::interpolate_pos_encoding(m->pos_embed, 8, 96, 16), ShapeError);
    }

    TEST_CASE("gradcheck of a micro ViT in double (input, embeddings, conv, attention, MLP, norms)") {
        auto m = micro(21);
        set_precision(*m, DType::f64);
        m->train();
        Tensor x = image(2, 12, 12, 22, DType::f64).requires_grad_();
        gradcheck([&](const std::vector<Tensor>& in) { return m->forward_features(in[0]); },
                  {x, param(*m, "blocks.1.mlp.fc2.bias"), param(*m, "norm.weight")}, "micro vit features 12x12");
        // 8x8 images: the 3x3 position grid is resized to 2x2 (the interpolation matrix's transpose in backward).
        Tensor x8 = image(3, 8, 8, 23, DType::f64).requires_grad_();
        gradcheck([&](const std::vector<Tensor>& in) { return m->linear_probe_features(in[0], 2); },
                  {x8, param(*m, "pos_embed"), param(*m, "cls_token"), param(*m, "patch_embed.proj.weight"),
                   param(*m, "blocks.0.attn.qkv.weight"), param(*m, "blocks.0.norm1.bias")},
                  "micro vit probe 8x8");
        Tensor x16 = image(1, 16, 12, 24, DType::f64);
        gradcheck([&](const std::vector<Tensor>& in) { return m->forward_map(x16); },
                  {param(*m, "pos_embed"), param(*m, "blocks.1.attn.proj.weight"), param(*m, "blocks.1.mlp.fc1.bias")},
                  "micro vit map 16x12");
    }

    TEST_CASE("drop-path: a linear rate over depth, whole-sample branches dropped in train, none in eval") {
        auto tiny = make("vit_tiny", 0, 0.1);
        for (size_t i = 0; i < 12; ++i) CHECK(tiny->blocks[i]->drop_path == doctest::Approx(0.1 * i / 11.0));
        nn::manual_seed(5);
        Generator gen(99);
        models::VitBlock blk(8, 2, 4, 0.5, &gen);
        const Tensor x = rand({32, 5, 8}, RngKey{6, 0}) - 0.5;
        blk.train();
        const Tensor y = blk.forward(x);
        CHECK(gen.counter() == 2);  // one key per branch
        // Each sample's output must be one of the four keep/drop combinations (kept branches scaled by 2).
        NoGradGuard ng;
        int dropped_attn = 0, dropped_mlp = 0;
        for (int64_t b = 0; b < 32; ++b) {
            const Tensor xb = x.slice(b, b + 1), yb = y.slice(b, b + 1);
            bool matched = false;
            for (int ka = 0; ka < 2 && !matched; ++ka) {
                const Tensor x1 = ka ? add(xb, blk.attn->forward(blk.norm1->forward(xb)) * 2.0) : xb;
                for (int km = 0; km < 2 && !matched; ++km) {
                    const Tensor want = km ? add(x1, blk.mlp->forward(blk.norm2->forward(x1)) * 2.0) : x1;
                    if (max_abs(want - yb) < 1e-5) {
                        matched = true;
                        dropped_attn += !ka;
                        dropped_mlp += !km;
                    }
                }
            }
            CHECK_MESSAGE(matched, "sample ", b, " is no keep/drop combination");
        }
        CHECK(dropped_attn > 0);
        CHECK(dropped_attn < 32);
        CHECK(dropped_mlp > 0);
        CHECK(dropped_mlp < 32);
        // Deterministic for a fixed generator state; a fresh key gives another mask.
        gen.set_counter(0);
        CHECK(bit_equal(blk.forward(x), y));
        CHECK(!bit_equal(blk.forward(x), y));
        // Eval: nothing dropped, no keys drawn, the same as a rate-0 block in train mode.
        blk.eval();
        const uint64_t before = gen.counter();
        const Tensor ye = blk.forward(x);
        CHECK(gen.counter() == before);
        blk.drop_path = 0.0;
        blk.train();
        CHECK(bit_equal(blk.forward(x), ye));
        CHECK(gen.counter() == before);
    }

    TEST_CASE("drop-path at model level: keys from the model's generator, reproducible from its state") {
        auto m = micro(30, 0.5);  // rates {0, 0.5}: only block 1 draws keys
        const Tensor x = image(16, 12, 12, 31);
        NoGradGuard ng;
        m->eval();
        const Tensor fe = m->forward_features(x);
        CHECK(m->drop_path_generator().counter() == 0);
        m->train();
        const uint64_t c0 = m->drop_path_generator().counter();
        const Tensor f1 = m->forward_features(x);
        CHECK(m->drop_path_generator().counter() == c0 + 2);
        CHECK(!bit_equal(f1, fe));
        m->drop_path_generator().set_counter(c0);
        CHECK(bit_equal(m->forward_features(x), f1));
        // Two models built from the same seed draw the same masks.
        CHECK(bit_equal(micro(30, 0.5)->forward_features(x), f1));
    }

    TEST_CASE("save/load round trip through the timm-layout safetensors file") {
        auto a = make("vit_tiny", 40), b = make("vit_tiny", 41);
        const std::string path = "/tmp/sslight_test_vit_" + std::to_string(::getpid()) + ".safetensors";
        models::save_backbone(path, *a);
        const io::TensorMap file = io::load_safetensors(path);
        CHECK(file.size() == 150);
        CHECK(file.at("patch_embed.proj.weight").shape() == Shape{192, 3, 16, 16});
        CHECK(bit_equal(file.at("patch_embed.proj.weight"), models::ohwi_to_oihw(a->patch_embed->proj->weight)));
        CHECK(file.at("pos_embed").shape() == Shape{1, 197, 192});
        CHECK(!bit_equal(param(*a, "pos_embed"), param(*b, "pos_embed")));
        models::load_backbone(path, *b);
        std::remove(path.c_str());
        for (auto& [name, t] : a->named_parameters()) CHECK_MESSAGE(bit_equal(*t, param(*b, name)), name);
        NoGradGuard ng;
        const Tensor x = image(2, 32, 48, 42);
        CHECK(bit_equal(a->forward_features(x), b->forward_features(x)));
    }

    TEST_CASE("a training step reaches every parameter and lowers the loss") {
        auto m = make("vit_tiny", 50);
        const Tensor x = image(2, 32, 32, 51);  // 2x2 patches: the interpolated position path
        const Tensor target = rand({2, 768}, RngKey{52, 0}) - 0.5;
        auto loss_of = [&] { return sum(m->linear_probe_features(x) * target); };
        m->eval();
        const double before = [&] { NoGradGuard ng; return loss_of().item(); }();
        m->train();
        m->zero_grad();
        loss_of().backward();
        std::map<std::string, Tensor> old;
        for (auto& [name, t] : m->named_parameters()) {
            REQUIRE_MESSAGE(t->grad().defined(), name, " got no gradient");
            CHECK_MESSAGE(max_abs(t->grad()) > 0, name, " has an all-zero gradient");
            old[name] = t->clone();
            NoGradGuard ng;
            add_(*t, t->grad(), -1e-3);  // SGD: minimise the loss
        }
        for (auto& [name, t] : m->named_parameters()) CHECK_MESSAGE(!bit_equal(*t, old[name]), name, " unchanged");
        m->eval();
        NoGradGuard ng;
        CHECK(loss_of().item() < before);
    }

    TEST_CASE("FLOPs: ViT-Tiny's MACs by formula (1.26 G at 224 px, as timm/fvcore quote)") {
        auto m = make("vit_tiny", 0);
        for (int64_t px : {224, 96}) {
            const int64_t g = px / 16, T1 = 1 + g * g, C = 192;
            const int64_t block = T1 * C * 3 * C + 2 * 3 * T1 * T1 * 64 + T1 * C * C + 2 * T1 * C * 4 * C;
            const int64_t want = g * g * 768 * C + 12 * block;
            const models::FlopCounter fc = models::count_flops(*m, px, px);
            CHECK(fc.macs() == want);
        }
        CHECK(models::count_flops(*m, 224, 224).flops() > 2'500'000'000);
    }

    TEST_CASE("errors: bad inputs and names") {
        auto m = micro(60);
        CHECK_THROWS_AS(m->forward_features(rand({1, 3, 12, 12}, RngKey{1, 1})), ShapeError);  // NCHW
        CHECK_THROWS_AS(m->forward_features(rand({1, 3, 12, 3}, RngKey{1, 1})), ShapeError);   // too small
        CHECK_THROWS_AS(m->forward_features(rand({12, 12, 3}, RngKey{1, 1})), ShapeError);
        CHECK_THROWS_AS(m->last_cls_tokens(image(1, 12, 12, 1), 0), Error);
        CHECK_THROWS_AS(m->last_cls_tokens(image(1, 12, 12, 1), 3), Error);
        CHECK_THROWS_AS(models::make_vit("vit_base"), ConfigError);
        VitConfig bad;
        bad.heads = 5;  // 192 not divisible
        CHECK_THROWS_AS(VisionTransformer{bad}, Error);
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("CUDA forward and backward match the CPU (f32, drop-path keys identical on both)") {
        const Device gpu = Device::cuda(0);
        for (int64_t px : {224, 96}) {
            INFO(px, " px");
            auto cpu_m = make("vit_tiny", 70, 0.1), gpu_m = make("vit_tiny", 70, 0.1);
            gpu_m->to(gpu);
            cpu_m->train();
            gpu_m->train();
            const Tensor x = image(2, px, px, 71);
            const Tensor gout = rand({2, 768}, RngKey{72, 0}) - 0.5;
            Tensor xc = x.clone().requires_grad_(), xg = x.to(gpu).requires_grad_();
            const Tensor pc = cpu_m->linear_probe_features(xc), pg = gpu_m->linear_probe_features(xg);
            CHECK(pg.device() == gpu);
            pc.backward(gout);
            pg.backward(gout.to(gpu));
            expect_close_scaled(pg, pc, 1e-3, "probe features");
            expect_close_scaled(xg.grad(), xc.grad(), 2e-3, "input gradient");
            for (const char* k : {"pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                                  "blocks.11.mlp.fc2.weight", "norm.bias"})
                expect_close_scaled(param(*gpu_m, k).grad(), param(*cpu_m, k).grad(), 2e-3, std::string(k) + " grad");
            NoGradGuard ng;
            cpu_m->eval();
            gpu_m->eval();
            expect_close_scaled(gpu_m->forward_map(x.to(gpu)), cpu_m->forward_map(x), 1e-3, "eval map");
        }
    }
}
