// Convergence on real images (issue 6): each method pre-trains a ResNet18 on the embedded handwritten digits
// (opencv-doc's digits.png, 4000 train / 1000 val, upscaled to 32 px) for a few epochs on the CPU, with the online
// linear probe on. The baseline is the same run at learning rate 0 (the backbone frozen at the same random init;
// only BatchNorm statistics and the probe move), so both probes see the same views for the same number of steps.
// Asserted, per method: the SSL loss falls (mean of the last fifth of the logged steps against the first fifth), and
// the probe's top-1 on the clean val images beats the frozen baseline's by a stated margin.
//
// Not asserted: kNN. On these digits a random-init ResNet18 is already close to pixel-space kNN (precise-BN kNN
// 84.6%, eval-mode 90.1%, raw pixels 93.6%), and every short CPU run measured so far lowered it (README "What the
// demo shows today"); the issue stays open on that point. Configuration (data-appropriate, set here, not the
// ImageNet recipe's): 2 global crops at scale 0.6-1 (a 30% crop of a 20-px digit often shows another digit), no
// locals, SGD lr 0.06, weight decay 5e-4, MoCo queue 512 (under a quarter of the 4000 images), SwAV 30 prototypes
// without a queue. Label `convergence` (not `cpu`: the sanitized pass would take an hour on it).
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
    std::vector<std::string> sets = {"run.epochs=3",
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
        sets.insert(sets.end(), {"optim.base_lr=0.24", "optim.final_lr=0.0024", "optim.weight_decay=5e-4",
                                 "optim.weight_decay_end=5e-4"});
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

// loss_ratio: the last fifth's mean loss must be below loss_ratio times the first fifth's. probe_margin: the trained
// probe's val top-1 must beat the frozen one's by this much (negative: reported, not asserted).
void check_method(const std::string& method, double loss_ratio, double probe_margin) {
    REQUIRE_MESSAGE(digits().real, "the real digits are needed (", digits().description, ")");
    const Outcome t = run(method, false), f = run(method, true);
    MESSAGE(method, ": loss ", t.first_loss, " -> ", t.last_loss, " (frozen ", f.first_loss, " -> ", f.last_loss,
            "); probe val top-1 ", 100 * t.probe, "% vs frozen random init ", 100 * f.probe, "%");
    CHECK(t.last_loss < loss_ratio * t.first_loss);
    CHECK(f.last_loss > 0.99 * f.first_loss);  // the frozen run does not learn (the comparison can fail)
    if (probe_margin >= 0) CHECK(t.probe > f.probe + probe_margin);
}

}  // namespace

TEST_SUITE("convergence") {
    // Measured with 2 threads (3 epochs, 186 steps): loss 2.41 -> 1.98, probe 68.3% vs 60.5% frozen.
    TEST_CASE("convergence: MoCo-v2 lowers its loss and lifts the online probe above the frozen random init") {
        check_method("moco", 0.9, 0.04);
    }
    // Measured: loss 2.58 -> 2.49 (the teacher temperature rises over the first epoch, which raises the floor),
    // probe 65.2% vs 60.2% frozen.
    TEST_CASE("convergence: DINO lowers its loss and lifts the online probe above the frozen random init") {
        check_method("dino", 0.98, 0.025);
    }
    // SwAV here settles within ~50 steps at a constant loss (1.3612 from step 50 to 186 with 30 prototypes, 1.8434
    // with 100, with or without a queue) and its probe does not beat the frozen one (62.6% vs 60.2%; 55.4% with 100
    // prototypes and a queue): only the loss is asserted; issue 6 keeps this open.
    TEST_CASE("convergence: SwAV lowers its loss (its probe is reported, not asserted)") {
        check_method("swav", 0.99, -1);
    }
}
