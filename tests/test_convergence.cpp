// Convergence on real images (issue 6): MoCo-v2, DINO and SwAV each pre-train a ResNet18 on the embedded handwritten
// digits (opencv-doc's digits.png, 4000 train / 1000 val, upscaled to 32 px) for 6 epochs on the CPU with the online
// linear probe on, then kNN (k 20, T 0.07) on the val digits against the same backbone at random init.
// Asserted per method: the loss falls (mean of the last fifth of the logged steps against the first fifth; DINO and
// SwAV to under half of ln K, their collapse value); kNN with BatchNorm statistics re-estimated on the train images
// (precise BN: the weights alone, the same protocol for both) beats the random init's; the probe's top-1 on the clean
// val images beats the frozen random init's. For MoCo the frozen baseline is run (the same run at learning rate 0:
// only BatchNorm statistics and the probe move, so both probes see the same views for the same number of steps) and
// its loss must stay flat; DINO's and SwAV's probes must clear 80% (their frozen twins, measured once: ~73%).
// Eval-mode kNN of the random init (90.1%) uses untouched running statistics (no normalisation at all) and is close
// to pixel-space kNN (93.6% on these digits); only MoCo is asserted not to fall below it.
//
// Configuration (data-appropriate, not the ImageNet recipe's): configs/digits_moco.toml, the shipped config: 2 global
// crops at scale 0.6-1 (a 30% crop of a 20-px digit often shows another digit), no horizontal flips, no locals, SGD
// lr 0.024 (0.096 per 256), weight decay 1.25e-3, MoCo queue 512 (under a quarter of the 4000 images), key momentum
// 0.99; run() swaps in DINO (teacher momentum 0.99, fixed teacher temperature 0.02) or SwAV (30 prototypes, no
// queue, Sinkhorn eps 0.02). What each setting did (2026-11-29, 1 thread, ResNet18):
// - Flips (data.flip_p = 0): mirroring is not a symmetry of digits. MoCo with the recipe's 0.5: kNN 82.4% eval mode /
//   81.8% precise BN against the random init's 90.1% / 84.6%, probe 77.6%; without: 91.9% / 92.5%, probe 92.2%
//   (seed 1: 89.9% / 90.9% against 88.2% / 82.3%).
// - DINO's pair loss at step 150 with the demo's head (K 512; ln 512 = 6.24 is the uniform student, DINO's
//   collapse): 3.55 with the settings here; 6.19 with the demo's teacher temperature warm-up 0.04 -> 0.07 in one
//   epoch (collapsed); 5.08 with teacher momentum 0.996; 4.53 with flips (probe 42% vs 62%).
// - SwAV's loss at step 100 (ln 30 = 3.40: uniform codes and predictions, a fixed point where the gradient vanishes):
//   2.07 with eps 0.02, 1.91 with 0.01; with SPEC's 0.05 it sat at exactly ln K from step ~50 on (30 or 100
//   prototypes, with or without a queue or flips). A reading not checked further: the random-init projections of
//   the digits are close to each other, and eps 0.05 leaves their small score differences near-uniform codes.
// Label `convergence` only: the sanitized pass (cpu|emu) skips it; one ctest entry per method (tests/tests.cmake).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "apps/plot.h"
#include "tests/files.h"
#include "tests/tiny_run.h"

using namespace sslight;
using namespace sslight::test;

namespace {

struct Outcome {
    double first_loss = 0, last_loss = 0, probe = 0;
    apps::PretrainResult result;  // kNN filled when asked for
};

const apps::EmbeddedData& digits() {
    static const apps::EmbeddedData d = apps::load_embedded_data(32, /*allow_fetch=*/true);
    return d;
}

// configs/digits_moco.toml (data, optimiser and MoCo settings) with `method` swapped in: DINO with SPEC's CNN head
// (2048 / 256 / K 4096), teacher momentum 0.99 and a fixed teacher temperature 0.02; SwAV with 30 prototypes, no
// queue, eps 0.02.
Outcome run(const std::string& method, bool frozen, bool knn) {
    std::vector<std::string> sets = {"run.log_every=5",
                                     "method.name=" + method,
                                     "method.dino_out_dim=4096",
                                     "method.momentum_teacher=0.99",
                                     "method.warmup_teacher_temp=0.02",
                                     "method.teacher_temp=0.02",
                                     "method.swav_prototypes=30",
                                     "method.swav_queue_length=0",
                                     "method.sinkhorn_eps=0.02",
                                     std::string("eval.knn_at_end=") + (knn ? "true" : "false")};
    if (frozen)
        sets.insert(sets.end(), {"optim.base_lr=0", "optim.final_lr=0", "optim.weight_decay=0",
                                 "optim.weight_decay_end=0"});
    apps::PretrainOptions o;
    o.config = apps::load_config(std::string(SSLIGHT_SOURCE_DIR) + "/configs/digits_moco.toml", sets);
    o.out_dir = temp_dir("convergence_" + method + (frozen ? "_frozen" : ""));
    o.data = &digits();
    o.progress = 0;
    const apps::PretrainResult r = apps::run_pretrain(o);
    const apps::Metrics m = apps::read_metrics(o.out_dir + "/metrics.jsonl");
    REQUIRE(m.steps.size() >= 10);
    const size_t fifth = m.steps.size() / 5;
    Outcome out;
    for (size_t i = 0; i < fifth; ++i) {
        out.first_loss += m.steps[i].loss / double(fifth);
        out.last_loss += m.steps[m.steps.size() - 1 - i].loss / double(fifth);
    }
    out.probe = r.probe_val_top1;
    out.result = r;
    return out;
}

// The trained run (with kNN at the end), reported.
Outcome trained(const std::string& method) {
    REQUIRE_MESSAGE(digits().real, "the real digits are needed (", digits().description, ")");
    const Outcome t = run(method, false, true);
    const apps::PretrainResult& r = t.result;
    REQUIRE(r.knn_done);
    MESSAGE(method, ": loss ", t.first_loss, " -> ", t.last_loss, "; probe val top-1 ", 100 * t.probe,
            "%; kNN top-1 precise BN ", 100 * r.knn_trained_pbn.top1, "% vs random init ", 100 * r.knn_random_pbn.top1,
            "%, eval mode ", 100 * r.knn_trained.top1, "% vs ", 100 * r.knn_random.top1, "%");
    return t;
}

// The frozen twin of a run: it must not learn (so the comparison can fail).
Outcome frozen(const std::string& method) {
    const Outcome f = run(method, true, false);
    MESSAGE(method, " frozen: loss ", f.first_loss, " -> ", f.last_loss, "; probe val top-1 ", 100 * f.probe, "%");
    CHECK(f.last_loss > 0.99 * f.first_loss);
    return f;
}

}  // namespace

TEST_SUITE("convergence") {
    // Measured (1 thread, as ctest runs it, 6 epochs = 372 steps): loss 5.84 -> 3.36 (frozen 6.08 -> 6.14); probe
    // 92.2% vs 73.2% frozen; kNN precise BN 92.5% vs 84.6% at random init, eval mode 91.9% vs 90.1%.
    TEST_CASE("convergence: MoCo-v2 lowers its loss and lifts kNN and the online probe above the random init") {
        const Outcome t = trained("moco"), f = frozen("moco");
        const apps::PretrainResult& r = t.result;
        CHECK(t.last_loss < 0.85 * t.first_loss);
        CHECK(t.probe > f.probe + 0.07);
        CHECK(r.knn_trained_pbn.top1 > r.knn_random_pbn.top1 + 0.04);
        CHECK(r.knn_trained.top1 >= r.knn_random.top1);
    }

    // DINO and SwAV have no frozen twin in CI (each is a full run): measured once, their frozen probes reached 73.0%
    // and 72.7% (MoCo's, asserted above, 73.2%), so a probe over 80% is a learned one.
    // Measured (the same): pair loss 8.36 -> 1.93 (first / last fifth; ln 4096 = 8.32); probe 85.0%
    // (the frozen twin, with the demo's 512-wide head: 73.0%); teacher kNN precise BN 87.5% vs 84.6% at random init,
    // eval mode 87.8% vs 90.1%. With the demo's head (512 / 128 / K 512): precise BN 86.1%, probe 89.0%.
    TEST_CASE("convergence: DINO lowers its loss far below ln K (no collapse), lifts kNN and the online probe") {
        const Outcome t = trained("dino");
        const apps::PretrainResult& r = t.result;
        CHECK(t.last_loss < 0.5 * std::log(4096.0));  // the uniform student is at ln K = 8.32
        CHECK(t.probe > 0.80);
        CHECK(r.knn_trained_pbn.top1 > r.knn_random_pbn.top1 + 0.01);
    }

    // Measured (the same): loss 3.21 -> 0.89 (frozen 3.70 -> 3.70); probe 90.5% vs 72.7% frozen; kNN precise BN
    // 89.1% vs 84.6% at random init (eval mode 89.2% vs 90.1%).
    TEST_CASE("convergence: SwAV lowers its loss far below ln K (no uniform codes), lifts kNN and the online probe") {
        const Outcome t = trained("swav");
        const apps::PretrainResult& r = t.result;
        CHECK(t.last_loss < 0.5 * std::log(30.0));  // uniform codes and predictions give ln K = 3.40
        CHECK(t.probe > 0.80);
        CHECK(r.knn_trained_pbn.top1 > r.knn_random_pbn.top1 + 0.02);
    }
}
