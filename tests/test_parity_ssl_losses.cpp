// Parity of the SSL losses with the methods' PyTorch code: tests/parity/ssl_losses_parity.py (Debian's
// python3-torch, float64) writes inputs, losses, upstream gradients and input gradients of DINO's DINOLoss, SwAV's
// distributed_sinkhorn + swapped loss (queue rows prepended) and MoCo's logits / cross-entropy / momentum update,
// each with the original plain averaging (= the baseline λ's) and SSLight's λ = (0.4, 0.6); sslight computes the
// same in float64 on the CPU. Skipped (exit 77, with the reason) only where python3-torch is not importable.
#include <doctest/doctest.h>

#include <cstdlib>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/shape_ops.h"
#include "ssl/losses.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;

namespace {

const io::TensorMap& reference() {
    static io::TensorMap ref = [] {
        const std::string out = "/tmp/sslight_ssl_losses_parity_" + std::to_string(::getpid()) + ".safetensors";
        const std::string cmd =
            std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR "/tests/parity/ssl_losses_parity.py " + out;
        REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
        io::TensorMap m = io::load_safetensors(out);
        std::remove(out.c_str());
        return m;
    }();
    return ref;
}

Tensor expected(const std::string& key) {
    const io::TensorMap& m = reference();
    REQUIRE_MESSAGE(m.count(key), "no reference tensor ", key);
    return m.at(key).clone();
}

const Tol kTol{1e-10, 1e-8};

// λ that reproduce the original plain average over the 2 gg and 2N gl pairs: (1/(1+N), N/(1+N)).
std::pair<double, double> lambdas(const std::string& name, int locals) {
    if (name.find("base") != std::string::npos) return {1.0 / (1 + locals), double(locals) / (1 + locals)};
    return {0.4, 0.6};
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("DINO loss, its gradient and the teacher mean match DINOLoss (baseline and SSLight λ)") {
        for (const std::string name : {"dino_base", "dino_sslight"}) {
            INFO(name);
            Tensor s = expected(name + ".student").requires_grad_();
            ssl::DinoLossArgs a;
            a.teacher_temp = 0.04;
            std::tie(a.lambda_gg, a.lambda_gl) = lambdas(name, 3);
            ssl::DinoLossResult r = ssl::dino_loss(s, expected(name + ".teacher"), expected(name + ".center"), a);
            expect_close(r.loss, expected(name + ".loss"), kTol, name + " loss");
            expect_close(r.teacher_mean, expected(name + ".teacher_mean"), kTol, name + " teacher mean");
            r.loss.backward(expected(name + ".gout"));
            expect_close(s.grad(), expected(name + ".grad"), kTol, name + " gradient");
        }
    }

    TEST_CASE("SwAV codes (queue prepended, last B kept) and swapped loss match distributed_sinkhorn + SwAV") {
        for (const std::string name : {"swav_base", "swav_sslight"}) {
            INFO(name);
            Tensor scores = expected(name + ".scores").requires_grad_(), queue = expected(name + ".queue_scores");
            const int64_t B = expected(name + ".codes0").size(0), Q = queue.size(0);
            std::vector<Tensor> codes;
            for (int crop = 0; crop < 2; ++crop) {
                Tensor all = ssl::sinkhorn(concat({queue, scores.detach().slice(crop * B, (crop + 1) * B)}, 0));
                codes.push_back(all.slice(Q, Q + B).clone());
                expect_close(codes.back(), expected(name + ".codes" + std::to_string(crop)), kTol, name + " codes");
            }
            auto [lgg, lgl] = lambdas(name, 4);
            Tensor loss = ssl::swav_loss(scores, codes, lgg, lgl);
            expect_close(loss, expected(name + ".loss"), kTol, name + " loss");
            loss.backward(expected(name + ".gout"));
            expect_close(scores.grad(), expected(name + ".grad"), kTol, name + " gradient");
        }
    }

    TEST_CASE("InfoNCE loss and dq match MoCo's logits + cross-entropy; EMA matches its momentum update") {
        Tensor q = expected("moco.q").requires_grad_();
        Tensor loss = ssl::infonce_loss(q, expected("moco.k"), expected("moco.queue"), 0.2);
        expect_close(loss, expected("moco.loss"), kTol, "moco loss");
        loss.backward(expected("moco.gout"));
        expect_close(q.grad(), expected("moco.grad"), kTol, "moco dq");
        Tensor pk = expected("moco.param_k"), pq = expected("moco.param_q");
        ssl::ema_update({&pk}, {&pq}, 0.999);
        expect_close(pk, expected("moco.ema"), kTol, "momentum update");
    }
}
