// The sslight app (apps/): the TOML subset parser (types, errors with line:column), config validation (unknown
// key, wrong type, out of range name the file, the key and the expectation), every shipped config, weighted
// kNN against hand-computed votes, a tiny pre-training run end to end (metrics.jsonl, checkpoints, export),
// resume equivalence (3 + 3 steps == 6 steps, bit for bit), refusal of a foreign checkpoint, stop signals.
#include <dirent.h>

#include <algorithm>
#include <csignal>
#include <cmath>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/knn.h"
#include "apps/pretrain.h"
#include "apps/toml.h"
#include <sys/stat.h>
#include <turbojpeg.h>

#include "doctest/doctest.h"
#include "engine/check.h"
#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "engine/random.h"
#include "models/backbone.h"
#include "tests/files.h"
#include "tests/tiny_run.h"

using namespace sslight;
using namespace sslight::apps;
using namespace sslight::test;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ConfigError& e) { return e.what(); }
    return "(no error)";
}




// root/<class>/i.jpg: 12 JPEGs of odd sizes over 3 classes.
std::string jpeg_folder() { return test::write_jpeg_folder(temp_dir("folder"), 12); }

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("toml: values of every supported type, tables and dotted keys") {
        const toml::Document d = toml::parse(
            "# comment\n"
            "top = 'lit\\eral'\n"
            "[a]\n"
            "i = -1_000  # trailing comment\n"
            "f = 2.5e-3\n"
            "b = true\n"
            "s = \"q\\\"x\\n\"\n"
            "arr = [1, 2.0,\n  3, ]\n"
            "x.y = 7\n"
            "[c.d]\n"
            "\"quoted key\" = false\n",
            "t.toml");
        REQUIRE(d.entries.size() == 8);
        CHECK(d.find("top")->str == "lit\\eral");
        CHECK(d.find("a.i")->integer == -1000);
        CHECK(d.find("a.i")->type == toml::Value::Type::integer);
        CHECK(d.find("a.f")->floating == doctest::Approx(2.5e-3));
        CHECK(d.find("a.b")->boolean);
        CHECK(d.find("a.s")->str == "q\"x\n");
        CHECK(d.find("a.arr")->array.size() == 3);
        CHECK(d.find("a.arr")->array[1].type == toml::Value::Type::floating);
        CHECK(d.find("a.x.y")->integer == 7);
        CHECK(d.find("c.d.quoted key")->type == toml::Value::Type::boolean);
        CHECK(d.find("a.f")->line == 5);
        CHECK(d.find("a.f")->column == 5);
    }

    TEST_CASE("toml: errors name file:line:column") {
        CHECK(contains(error_of([] { toml::parse("a = 1\nb = \n", "x.toml"); }), "x.toml:2:"));
        CHECK(contains(error_of([] { toml::parse("a = 1\n\nc = \"open\n", "x.toml"); }),
                       "x.toml:3:5: unterminated string"));
        CHECK(contains(error_of([] { toml::parse("a = 1\na = 2\n", "x.toml"); }),
                       "x.toml:2:1: the key 'a' is defined twice"));
        CHECK(contains(error_of([] { toml::parse("a = 1 2\n", "x.toml"); }), "x.toml:1:7"));
        CHECK(contains(error_of([] { toml::parse("a = {b = 1}\n", "x.toml"); }), "inline tables"));
        CHECK(contains(error_of([] { toml::parse("a = 01\n", "x.toml"); }), "x.toml:1:5"));
        CHECK(contains(error_of([] { toml::parse("a = [1, 2\n", "x.toml"); }), "unterminated array"));
        CHECK(contains(error_of([] { toml::parse("[t\n", "x.toml"); }), "x.toml:1:3: expected ']'"));
    }

    TEST_CASE("config: unknown key, wrong type, out of range stop with file, key and expectation") {
        const std::string unknown =
            error_of([] { parse_config("[optim]\nbase_lr = 0.1\nbase_lrr = 0.2\n", "my.toml"); });
        CHECK(contains(unknown, "my.toml:3:12"));
        CHECK(contains(unknown, "unknown key 'optim.base_lrr'"));
        CHECK(contains(unknown, "optim.base_lr"));  // the section's known keys are listed
        const std::string type = error_of([] { parse_config("[run]\nepochs = \"ten\"\n", "my.toml"); });
        CHECK(
            contains(type, "my.toml:2:10: key 'run.epochs' expects an integer in [1, 100000], got the string \"ten\""));
        const std::string range = error_of([] { parse_config("[method]\nmomentum_teacher = 1.5\n", "my.toml"); });
        CHECK(contains(range, "key 'method.momentum_teacher' expects a number in [0, 1], got 1.5"));
        const std::string choice = error_of([] { parse_config("[model]\nbackbone = \"resnet19\"\n", "my.toml"); });
        CHECK(contains(choice, "key 'model.backbone' expects one of"));
        CHECK(contains(choice, "\"resnet18\""));
        const std::string pair = error_of([] { parse_config("[data]\nglobal_scale = [0.5, 0.1]\n", "my.toml"); });
        CHECK(contains(pair, "key 'data.global_scale' expects [] (the recipe's) or an array of two numbers"));
        const std::string relation =
            error_of([] { parse_config("[optim]\nbase_lr = 0.1\nfinal_lr = 0.2\n", "my.toml"); });
        CHECK(contains(relation, "my.toml: optim.final_lr (0.2) must not exceed optim.base_lr (0.1)"));
    }

    TEST_CASE("config: data.flip_p sets every view's flip probability; unset keeps the recipe's 0.5") {
        const data::ViewRecipe def = recipe_of(parse_config("", "f.toml"));
        for (int v = 0; v < def.num_views(); ++v) CHECK(def.view(v).flip_p == 0.5);
        const PretrainConfig off = parse_config("[data]\nflip_p = 0\n", "f.toml");
        const data::ViewRecipe r = recipe_of(off);
        REQUIRE(r.num_views() == def.num_views());
        for (int v = 0; v < r.num_views(); ++v) CHECK(r.view(v).flip_p == 0);
        CHECK(recipe_of(parse_config("", "f.toml", {"data.flip_p=0.25", "data.n_local=3"})).locals[2].flip_p == 0.25);
        CHECK(config_hash(off) != config_hash(parse_config("", "f.toml")));  // a checkpoint of one is not the other's
        CHECK(canonical_text(parse_config(canonical_text(off), "back.toml")) == canonical_text(off));
        CHECK(contains(error_of([] { parse_config("[data]\nflip_p = 1.5\n", "f.toml"); }),
                       "key 'data.flip_p' expects a number in [0, 1] or nan (the recipe's), got 1.5"));
    }

    TEST_CASE("config: --set overrides use the same rules") {
        PretrainConfig c =
            parse_config("[run]\nepochs = 30\n", "s.toml",
                         {"run.epochs=15", "model.backbone=mobilenet_v2", "data.local_scale=[0.05, 0.3]"});
        CHECK(c.epochs == 15);
        CHECK(c.method.backbone == "mobilenet_v2");
        REQUIRE(c.local_scale.size() == 2);
        CHECK(c.local_scale[1] == doctest::Approx(0.3));
        CHECK(c.name == "s");
        CHECK(contains(error_of([] { parse_config("", "s.toml", {"run.epochs=0"}); }),
                       "--set run.epochs: key 'run.epochs' expects an integer in [1, 100000], got 0"));
        CHECK(contains(error_of([] { parse_config("", "s.toml", {"run.nope=1"}); }), "unknown key 'run.nope'"));
        CHECK(contains(error_of([] { parse_config("", "s.toml", {"run.epochs"}); }), "expected key=value"));
        CHECK(contains(error_of([] { parse_config("", "s.toml", {"method.sslight=yes"}); }), "expects a boolean"));
    }

    TEST_CASE("config: every shipped config parses and validates; demo.toml equals the built-in copy") {
        const std::string dir = std::string(SSLIGHT_SOURCE_DIR) + "/configs";
        DIR* d = opendir(dir.c_str());
        REQUIRE(d != nullptr);
        std::vector<std::string> names;
        while (dirent* e = readdir(d)) {
            const std::string n = e->d_name;
            if (n.size() > 5 && n.substr(n.size() - 5) == ".toml") names.push_back(n);
        }
        closedir(d);
        CHECK(names.size() >= 17);  // 12 SPEC §7 runs + ResNet50 / ViT-Small pairs + demo
        for (const char* want :
             {"dino_vit_tiny_baseline.toml", "dino_vit_tiny_sslight.toml", "dino_resnet18_sslight.toml",
              "dino_resnet34_baseline.toml", "dino_mobilenet_v2_sslight.toml", "swav_mobilenet_v2_baseline.toml",
              "moco_mobilenet_v2_sslight.toml", "demo.toml"})
            CHECK(std::find(names.begin(), names.end(), want) != names.end());
        for (const std::string& n : names) {
            INFO(n);
            PretrainConfig c;
            CHECK_NOTHROW(c = load_config(dir + "/" + n));
            CHECK_NOTHROW(recipe_of(c));
            CHECK(c.name + ".toml" == n);
            if (n.find("_sslight") != std::string::npos) CHECK(c.method.sslight);
        }
        CHECK(canonical_text(load_config(dir + "/demo.toml")) ==
              canonical_text(parse_config(builtin_demo_config(), "demo.toml")));
    }

    TEST_CASE("knn: weighted votes against hand-computed values") {
        // Val [1, 0]; train sims: A 1 (class 0), C 0.8 and B 0.6 (class 1). T 0.07: e^(1/.07) = 1.6e6 beats
        // e^(.8/.07) + e^(.6/.07) = 9.2e4 + 5.3e3 -> class 0. T 10: e^.1 = 1.105 < e^.08 + e^.06 = 2.145 -> class 1.
        // Features are not normalised on input (scaled rows), so the normalisation is exercised too.
        const Tensor train = from_vector(std::vector<float>{2, 0, 0.6f, 0.8f, 1.6f, 1.2f, -1, 0}, {4, 2});
        const std::vector<int64_t> tl = {0, 1, 1, 2};
        const Tensor val = from_vector(std::vector<float>{3, 0, 0, -2}, {2, 2});
        // Second val row [0, -1]: sims A 0, B -0.8, C -0.6, D 0 -> top-3 {A, D, C}: class 0 e^0, 2 e^0, 1 e^(-.6/T).
        KnnResult r = knn_classify(train, tl, val, {0, 0}, 3, 3, 0.07);
        CHECK(r.top1 == doctest::Approx(1.0));  // row 2: ties 0 vs 2 go to the lower class
        r = knn_classify(train, tl, val, {1, 0}, 3, 3, 10.0);
        CHECK(r.top1 == doctest::Approx(1.0));
        r = knn_classify(train, tl, val, {0, 2}, 3, 3, 10.0);
        CHECK(r.top1 == doctest::Approx(0.0));
        CHECK(r.top5 == doctest::Approx(1.0));                 // 3 classes: always within the top 5
        r = knn_classify(train, tl, val, {1, 1}, 3, 1, 0.07);  // k 1: the nearest only
        CHECK(r.top1 == doctest::Approx(0.0));
    }

    TEST_CASE("knn: precise BN averages the set's batch statistics; restore puts the old ones back") {
        models::BackboneOptions o;
        o.width_mult = 0.25;
        nn::init_generator() = Generator(3);
        std::shared_ptr<models::Backbone> b = models::make_backbone("mobilenet_v2", o);
        b->eval();
        const ImageSet& set = tiny_data().train;
        REQUIRE(set.count() % 2 == 0);
        nn::BatchNorm* bn = nullptr;
        for (auto& [name, m] : b->named_modules())
            if (!bn) bn = dynamic_cast<nn::BatchNorm*>(m);
        REQUIRE(bn != nullptr);
        // The first BatchNorm's input does not depend on any statistics: its mean over the set equals the
        // average of the means of two equal halves.
        std::vector<Tensor> saved = recalibrate_batch_norm(*b, set, Device::cpu(), int(set.count()));
        const std::vector<float> whole = bn->running_mean.to_vector<float>();
        CHECK_FALSE(b->is_training());
        restore_batch_norm(*b, saved);
        for (float v : bn->running_mean.to_vector<float>()) CHECK(v == 0.0f);
        for (float v : bn->running_var.to_vector<float>()) CHECK(v == 1.0f);
        CHECK(bn->num_batches_tracked.data<int64_t>()[0] == 0);
        saved = recalibrate_batch_norm(*b, set, Device::cpu(), int(set.count() / 2));
        const std::vector<float> halves = bn->running_mean.to_vector<float>();
        double scale = 0;
        for (float v : whole) scale = std::max(scale, double(std::fabs(v)));
        REQUIRE(scale > 1e-3);
        for (size_t i = 0; i < whole.size(); ++i) CHECK(std::fabs(whole[i] - halves[i]) <= 1e-5 * scale);
        restore_batch_norm(*b, saved);
        CHECK_THROWS_AS(restore_batch_norm(*b, {}), Error);
    }

    TEST_CASE("pretrain: a tiny run end to end writes metrics, checkpoints and the backbone; export matches") {
        const std::string out = temp_dir("e2e");
        PretrainConfig c =
            tiny_config({"run.epochs=1", "eval.knn_at_end=true", "eval.knn_k=5", "checkpoint.every_steps=4"});
        PretrainResult r = run_tiny(c, out, false);
        CHECK(r.iterations == 6);
        CHECK(std::isfinite(r.last_loss));
        REQUIRE(r.knn_done);
        CHECK(r.knn_trained.count == 10);
        CHECK(r.knn_trained.top1 >= 0.0);
        std::ifstream m(out + "/metrics.jsonl");
        std::string line, all;
        int steps = 0, epochs = 0, knn = 0;
        while (std::getline(m, line)) {
            steps += contains(line, "\"type\":\"step\""), epochs += contains(line, "\"type\":\"epoch\"");
            knn += contains(line, "\"type\":\"knn\"");
            CHECK(line.front() == '{');
        }
        CHECK(steps == 3);  // log_every 2
        CHECK(epochs == 1);
        CHECK(knn == 1);
        const std::vector<std::string> cps = list_checkpoints(out);
        REQUIRE(cps.size() == 2);  // steps 4 and 6 (the epoch end), keep 2
        CHECK(contains(cps.back(), "checkpoint_000000006"));
        io::Metadata md;
        io::TensorMap t = io::load_safetensors(cps.back(), &md);
        CHECK(md["model"] == "mobilenet_v2");
        CHECK(md["method"] == "dino");
        CHECK(t.count("model.center") == 1);
        CHECK(export_backbone(cps.back(), c, out + "/exported.safetensors") == out + "/exported.safetensors");
        io::TensorMap a = io::load_safetensors(out + "/exported.safetensors");
        io::TensorMap b = io::load_safetensors(out + "/backbone.safetensors");
        REQUIRE(a.size() == b.size());
        CHECK(a.count("features.0.0.weight") == 1);  // torchvision names
        for (auto& [k, v] : a) CHECK(v.to_vector<float>() == b.at(k).to_vector<float>());
    }

    TEST_CASE("pretrain: 3 steps + resume for 3 more equals 6 uninterrupted steps, bit for bit") {
        const std::string one = temp_dir("full"), two = temp_dir("split");
        run_tiny(tiny_config({"train.max_steps=6", "run.epochs=2", "data.max_train_samples=16"}), one, false);
        PretrainResult p =
            run_tiny(tiny_config({"train.max_steps=3", "run.epochs=2", "data.max_train_samples=16"}), two, false);
        CHECK(p.iterations == 3);
        PretrainResult q =
            run_tiny(tiny_config({"train.max_steps=6", "run.epochs=2", "data.max_train_samples=16"}), two, true);
        CHECK(q.iterations == 6);
        CHECK(check_same_checkpoint(list_checkpoints(one).back(), list_checkpoints(two).back()).size() >
              100);  // student, teacher, centre, optimizer buffers
        io::TensorMap a = io::load_safetensors(list_checkpoints(one).back());
        // A different run must differ (the comparison can fail).
        const std::string three = temp_dir("other");
        run_tiny(tiny_config({"train.max_steps=6", "run.epochs=2", "data.max_train_samples=16", "run.seed=1"}), three,
                 false);
        io::TensorMap c = io::load_safetensors(list_checkpoints(three).back());
        CHECK(c.at("model.student.backbone.features.0.0.weight").to_vector<float>() !=
              a.at("model.student.backbone.features.0.0.weight").to_vector<float>());
    }

    TEST_CASE("pretrain: a checkpoint of another model or config is refused with what differs") {
        const std::string out = temp_dir("mismatch");
        run_tiny(tiny_config({"train.max_steps=2"}), out, false);
        std::string e = error_of([&] {
            run_tiny(tiny_config({"train.max_steps=4", "method.student_temp=0.2"}), out, true);
        });
        CHECK(contains(e, "belongs to another run"));
        CHECK(contains(e, "method.student_temp: checkpoint 0.10000000000000001, this run 0.20000000000000001"));
        e = error_of([&] { run_tiny(tiny_config({"train.max_steps=4", "model.width_mult=0.5"}), out, true); });
        CHECK(contains(e, "model.width_mult: checkpoint 0.25, this run 0.5"));
        e = error_of([&] {
            run_tiny(tiny_config({"train.max_steps=4", "model.backbone=resnet18", "model.width_mult=1"}), out, true);
        });
        CHECK(contains(e, "model: checkpoint mobilenet_v2, this run resnet18"));
        CHECK(list_checkpoints(out).size() == 1);  // nothing overwritten
    }

    TEST_CASE("pretrain: SIGTERM / SIGUSR1 write a checkpoint and return cleanly; resume finishes the run") {
        for (int sig : {SIGTERM, SIGUSR1}) {
            const std::string out = temp_dir("signal");
            PretrainOptions o;
            o.config = tiny_config({"train.max_steps=5"});
            o.out_dir = out;
            o.data = &tiny_data();
            o.progress = 0;
            o.on_step = [sig](int64_t it) {
                if (it == 2) std::raise(sig);
            };
            PretrainResult r = run_pretrain(o);
            CHECK(r.interrupted);
            CHECK(r.iterations == 2);
            REQUIRE(list_checkpoints(out).size() == 1);
            CHECK(contains(list_checkpoints(out).back(), "checkpoint_000000002"));
            o.on_step = nullptr;
            o.resume = true;
            r = run_pretrain(o);
            CHECK_FALSE(r.interrupted);
            CHECK(r.iterations == 5);
        }
    }

    TEST_CASE("pretrain: an ImageFolder run through the threaded loader resumes exactly too") {
        const std::string root = jpeg_folder();
        auto run = [&](const std::string& out, int64_t max_steps, bool resume) {
            PretrainOptions o;
            o.config = tiny_config({"train.max_steps=" + std::to_string(max_steps), "data.num_threads=2"});
            o.data_dir = root;
            o.out_dir = out;
            o.resume = resume;
            o.progress = 0;
            return run_pretrain(o);
        };
        const std::string one = temp_dir("folder_full"), two = temp_dir("folder_split");
        CHECK(run(one, 5, false).iterations == 5);  // 3 steps per epoch: crosses an epoch
        CHECK(run(two, 2, false).iterations == 2);
        CHECK(run(two, 5, true).iterations == 5);
        io::TensorMap a = io::load_safetensors(list_checkpoints(one).back());
        io::TensorMap b = io::load_safetensors(list_checkpoints(two).back());
        REQUIRE(a.size() == b.size());
        for (auto& [k, v] : a)
            if (v.dtype() == DType::f32) CHECK(v.to_vector<float>() == b.at(k).to_vector<float>());
    }

}  // TEST_SUITE("cpu")
