// Convergence on real images (issue 6): MoCo-v2 pre-trains a ResNet18 on the embedded handwritten digits
// (opencv-doc's digits.png, 4000 train / 1000 val, upscaled to 32 px) for 6 epochs on the CPU, with the online linear
// probe on. The baseline is the same run at learning rate 0 (the backbone frozen at the same random init; only
// BatchNorm statistics and the probe move), so both probes see the same views for the same number of steps.
// Asserted: the loss falls (mean of the last fifth of the logged steps against the first fifth), the frozen run's
// does not, and the probe's top-1 on the clean val images beats the frozen baseline's by a stated margin.
//
// DINO and SwAV have no case yet: in this budget they do not learn in a way a test should lock in (issue 6):
// - DINO (6 epochs): pair loss 6.41 -> 6.21, at ln 512 = 6.24, the uniform student (DINO's collapse mode); probe
//   70.1% vs 64.9% frozen, but at 3 epochs that gap was +5.0 and +1.4 points in two runs differing only in float
//   rounding.
// - SwAV (3 epochs): its loss sits at exactly ln K from step ~50 on (uniform codes and predictions; 30 or 100
//   prototypes, with or without a queue); probe 62.6% vs 60.2% frozen, 55.4% with 100 prototypes and a queue.
// kNN is not asserted either: a random-init ResNet18 is already close to pixel-space kNN on these digits
// (precise-BN kNN 84.6%, eval-mode 90.1%, raw pixels 93.6%), and every short CPU run measured lowered it (README,
// "What the demo shows today").
//
// Configuration (data-appropriate, set here, not the ImageNet recipe's): 2 global crops at scale 0.6-1 (a 30% crop
// of a 20-px digit often shows another digit), no locals, SGD lr 0.024 (0.096 per 256), weight decay 1.25e-3, queue
// 512 (under a quarter of the 4000 images). These are the settings first measured when SSLight's λ_gg = 0.4 still
// scaled a locals-free loss (lr 0.06, wd 5e-4: the same SGD trajectory up to rounding); at lr 0.06 with λ = 1 the
// probe ended at 59.3% vs 60.5% frozen (3 epochs). Label `convergence` only: the sanitized pass (cpu|emu) skips it.
#include <doctest/doctest.h>

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
};

const apps::EmbeddedData& digits() {
    static const apps::EmbeddedData d = apps::load_embedded_data(32, /*allow_fetch=*/true);
    return d;
}

Outcome run(const std::string& method, bool frozen) {
    std::vector<std::string> sets = {"run.epochs=6",
                                     "run.batch_size=64",
                                     "run.log_every=5",
                                     "data.max_train_samples=0",
                                     "data.n_local=0",
                                     "data.global_scale=[0.6, 1.0]",
                                     "method.name=" + method,
                                     "method.moco_queue=512",
                                     "method.moco_momentum=0.99",
                                     "method.swav_prototypes=30",
                                     "method.swav_queue_length=0",
                                     "optim.optimizer=sgd",
                                     "optim.warmup_epochs=1",
                                     "eval.online_probe=true",
                                     "eval.knn_at_end=false",
                                     "checkpoint.keep=1"};
    if (frozen)
        sets.insert(sets.end(), {"optim.base_lr=0", "optim.final_lr=0", "optim.weight_decay=0",
                                 "optim.weight_decay_end=0"});
    else
        sets.insert(sets.end(), {"optim.base_lr=0.096", "optim.final_lr=0.00096", "optim.weight_decay=1.25e-3",
                                 "optim.weight_decay_end=1.25e-3"});
    apps::PretrainOptions o;
    o.config = apps::parse_config(apps::builtin_demo_config(), "convergence.toml", sets);
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
    return out;
}

// The trained run and its frozen twin; returns both. The frozen run must not learn (so the comparison can fail).
std::pair<Outcome, Outcome> trained_and_frozen(const std::string& method) {
    REQUIRE_MESSAGE(digits().real, "the real digits are needed (", digits().description, ")");
    const Outcome t = run(method, false), f = run(method, true);
    MESSAGE(method, ": loss ", t.first_loss, " -> ", t.last_loss, " (frozen ", f.first_loss, " -> ", f.last_loss,
            "); probe val top-1 ", 100 * t.probe, "% vs frozen random init ", 100 * f.probe, "%");
    CHECK(f.last_loss > 0.99 * f.first_loss);
    return {t, f};
}

}  // namespace

TEST_SUITE("convergence") {
    // Measured (1 thread, as ctest runs it, 6 epochs = 372 steps): loss 5.90 -> 4.04, probe 77.6% vs 63.3% frozen.
    // At 3 epochs the gap was 4.5-7.8 points between two runs that differ only in float rounding: hence 6 epochs.
    TEST_CASE("convergence: MoCo-v2 lowers its loss and lifts the online probe above the frozen random init") {
        const auto [t, f] = trained_and_frozen("moco");
        CHECK(t.last_loss < 0.85 * t.first_loss);
        CHECK(t.probe > f.probe + 0.07);
    }
}
