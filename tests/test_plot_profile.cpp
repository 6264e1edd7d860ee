// Plots, profiling and the gradient check of issue 8: sslight plot's PNG (signature and IHDR size) from a synthetic
// metrics.jsonl with each installed plotter (skipped with the reason otherwise), malformed metrics naming the line,
// the profiler's table (forward ops, "<op>_backward" rows, no-grad blocks, exclusive times adding up to the step)
// and its Chrome trace (parsed with engine/io/json.h), pretrain --profile end to end, the gradient check (bit test
// and GPU-style sums) and the stop on a non-finite gradient naming the first parameter with the last checkpoint left
// as it was. The gpu suite runs the sums path and CUDA-event timing on a device.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/plot.h"
#include "apps/pretrain.h"
#include "doctest/doctest.h"
#include "engine/autograd.h"
#include "engine/io/json.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/softmax.h"
#include "engine/profiler.h"
#include "tests/compare.h"
#include "tests/files.h"

using namespace sslight;
using namespace sslight::apps;
using sslight::test::contains;
using sslight::test::temp_dir;
using sslight::test::error_of;

namespace {




std::string read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
}

// 40 logged steps (a warm-up then a cosine lr), a resumed stretch that repeats iterations 31-34 with other losses,
// one null loss, two epoch records and a kNN record at the end: what sslight pretrain writes.
std::string synthetic_metrics() {
    std::string s;
    auto step = [&](int it, const std::string& loss) {
        const double lr = it < 10 ? 0.05 * it : 0.5 * (1 + std::cos(3.14159 * (it - 10) / 30.0)) * 0.5;
        s += "{\"type\":\"step\",\"iteration\":" + std::to_string(it) + ",\"epoch\":0,\"loss\":" + loss +
             ",\"lr\":" + std::to_string(lr) + ",\"weight_decay\":1e-06,\"samples_per_s\":12.5,\"elapsed_s\":3}\n";
    };
    for (int it = 1; it <= 34; ++it) step(it, it == 7 ? "null" : std::to_string(6.0 - 0.1 * it));
    s += "{\"type\":\"epoch\",\"epoch\":0,\"iteration\":20,\"loss_mean\":4.5,\"elapsed_s\":9}\n";
    for (int it = 31; it <= 40; ++it) step(it, std::to_string(3.0 - 0.05 * it));  // resumed from iteration 30
    s += "\n{\"type\":\"epoch\",\"epoch\":1,\"iteration\":40,\"loss_mean\":1.6,\"elapsed_s\":18}\n";
    s += "{\"type\":\"knn\",\"iteration\":40,\"k\":20,\"temperature\":0.07,\"top1\":0.62,\"top5\":0.91,"
         "\"random_init_top1\":0.31,\"random_init_top5\":0.66,\"elapsed_s\":2}\n";
    return s;
}

// Width and height from a PNG's IHDR chunk, or {0, 0} when the file is not a PNG.
std::pair<uint32_t, uint32_t> png_size(const std::string& path) {
    const std::string b = read_all(path);
    if (b.size() < 24 || b.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) != 0 || b.compare(12, 4, "IHDR") != 0)
        return {0, 0};
    auto be32 = [&](size_t o) {
        return uint32_t(uint8_t(b[o])) << 24 | uint32_t(uint8_t(b[o + 1])) << 16 | uint32_t(uint8_t(b[o + 2])) << 8 |
               uint32_t(uint8_t(b[o + 3]));
    };
    return {be32(16), be32(20)};
}

// A tiny DINO run (MobileNetV2 x0.25, 16/8-px crops of a generated set, batch 4), as in test_apps.
PretrainOptions tiny_options(const std::string& out, const std::vector<std::string>& extra) {
    std::vector<std::string> sets = {"run.epochs=2", "run.batch_size=4", "run.log_every=1", "data.global_size=16",
                                     "data.local_size=8", "data.n_local=2", "data.max_train_samples=24",
                                     "method.dino_out_dim=16", "method.dino_hidden_dim=16",
                                     "method.dino_bottleneck_dim=8", "optim.warmup_epochs=1", "eval.knn_at_end=false",
                                     "checkpoint.keep=2", "model.backbone=mobilenet_v2", "model.width_mult=0.25",
                                     "run.device=cpu"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    static const EmbeddedData data = generated_digits(16, 4, 7);
    PretrainOptions o;
    o.config = parse_config(builtin_demo_config(), "tiny.toml", sets);
    o.out_dir = out;
    o.data = &data;
    o.progress = 0;
    return o;
}

const profiler::Row* find_row(const profiler::Report& r, const std::string& name) {
    for (const profiler::Row& row : r.ops)
        if (row.name == name) return &row;
    return nullptr;
}

// Every complete ("X") event of a Chrome trace, checked for the fields chrome://tracing and Perfetto need.
std::vector<json::Value> trace_events(const std::string& path) {
    const json::Value v = json::parse(read_all(path), path);
    REQUIRE(v.is_object());
    const json::Value* events = v.find("traceEvents");
    REQUIRE(events != nullptr);
    std::vector<json::Value> out;
    for (const json::Value& e : events->as_array("traceEvents")) {
        REQUIRE(e.find("ph") != nullptr);
        if (e.find("ph")->as_string("ph") != "X") continue;
        CHECK(!e.find("name")->as_string("name").empty());
        CHECK(e.find("ts")->as_double("ts") >= 0);
        CHECK(e.find("dur")->as_double("dur") >= 0);
        CHECK(e.find("pid")->is_number());
        CHECK(e.find("tid")->is_number());
        out.push_back(e);
    }
    return out;
}

// One training step of a two-layer MLP with a no-grad branch, inside the profiler's step and phases.
void mlp_step(Tensor& w1, Tensor& b1, Tensor& w2, Tensor& b2, int seed, Device d = Device::cpu()) {
    profiler::step_begin();
    profiler::phase("forward");
    const Tensor x = test::random_tensor({6, 5}, uint64_t(seed)).to(d);
    const Tensor labels = from_vector<int64_t>({0, 2, 1, 3, 3, 0}, {6}).to(d);
    const Tensor h = relu(linear(x, w1, b1));
    {
        NoGradGuard ng;
        (void)softmax(linear(h.detach(), w2, b2));  // a "teacher" forward: ops without a graph
    }
    const Tensor loss = cross_entropy(linear(h, w2, b2), labels);
    profiler::phase("backward");
    loss.backward();
    profiler::step_end();
}

// [finite, NaN at the end of an odd size, finite values whose f32 sum overflows, an f64 -Inf, undefined] on `d`.
std::vector<Tensor> poisoned_gradients(Device d) {
    Tensor nan = test::random_tensor({37}, 2), inf = test::random_tensor({2, 3}, 3, DType::f64);
    nan.data<float>()[36] = std::numeric_limits<float>::quiet_NaN();
    inf.data<double>()[4] = -std::numeric_limits<double>::infinity();
    std::vector<Tensor> g = {test::random_tensor({5, 3}, 1), nan, full({4}, 3.0e38), inf, Tensor()};
    for (Tensor& t : g)
        if (t.defined() && !(d.is_cuda() && t.dtype() == DType::f64)) t = t.to(d);
    if (d.is_cuda()) g[3] = g[3].to(DType::f32).to(d);
    return g;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("plot: metrics.jsonl is read in iteration order; a resumed iteration keeps its later record") {
        const Metrics m = parse_metrics(synthetic_metrics(), "metrics.jsonl");
        REQUIRE(m.steps.size() == 40);
        for (size_t i = 0; i < m.steps.size(); ++i) CHECK(m.steps[i].iteration == int64_t(i + 1));
        CHECK(std::isnan(m.steps[6].loss));                          // null
        CHECK(m.steps[30].loss == doctest::Approx(3.0 - 0.05 * 31));  // the resumed record wins
        REQUIRE(m.epochs.size() == 2);
        CHECK(m.epochs[1].loss_mean == doctest::Approx(1.6));
        REQUIRE(m.knn.size() == 1);
        CHECK(m.knn[0].top1 == doctest::Approx(0.62));
        CHECK(m.knn[0].random_top5 == doctest::Approx(0.66));
    }

    TEST_CASE("plot: without kNN records, the epochs' top1 / top5 (linear, finetune) are the accuracy points") {
        const std::string text = "{\"type\":\"step\",\"iteration\":1,\"loss\":2.0,\"lr\":0.1}\n"
                                 "{\"type\":\"epoch\",\"iteration\":1,\"loss_mean\":2.0,\"top1\":0.25,\"top5\":0.75}\n"
                                 "{\"type\":\"epoch\",\"iteration\":2,\"loss_mean\":1.5}\n";
        Metrics m = parse_metrics(text, "m.jsonl");
        CHECK(m.validation);
        REQUIRE(m.knn.size() == 1);
        CHECK(m.knn[0].top1 == doctest::Approx(0.25));
        CHECK(m.knn[0].top5 == doctest::Approx(0.75));
        CHECK(std::isnan(m.knn[0].random_top1));
        m = parse_metrics(synthetic_metrics(), "metrics.jsonl");  // kNN records: those, not validation
        CHECK_FALSE(m.validation);
    }

    TEST_CASE("plot: the online probe's fields are read; absent they are NaN") {
        const std::string text =
            "{\"type\":\"step\",\"iteration\":1,\"loss\":2.0,\"lr\":0.1,\"probe_top1\":0.25}\n"
            "{\"type\":\"step\",\"iteration\":2,\"loss\":1.9,\"lr\":0.1}\n"
            "{\"type\":\"knn\",\"iteration\":2,\"top1\":0.5,\"top5\":0.9}\n"
            "{\"type\":\"probe\",\"iteration\":2,\"val_top1\":0.4}\n"
            "{\"type\":\"probe\",\"iteration\":3,\"val_top1\":0.45}\n";
        const Metrics m = parse_metrics(text, "m.jsonl");
        REQUIRE(m.steps.size() == 2);
        CHECK(m.steps[0].probe_top1 == doctest::Approx(0.25));
        CHECK(std::isnan(m.steps[1].probe_top1));
        REQUIRE(m.knn.size() == 2);  // a probe record without kNN (eval.knn_at_end off) is a point of its own
        CHECK(m.knn[0].probe_val_top1 == doctest::Approx(0.4));
        CHECK(m.knn[0].top1 == doctest::Approx(0.5));
        CHECK(std::isnan(m.knn[1].top1));
        CHECK(m.knn[1].probe_val_top1 == doctest::Approx(0.45));
        CHECK(std::isnan(parse_metrics(synthetic_metrics(), "m").knn[0].probe_val_top1));
    }

    TEST_CASE("plot: a malformed metrics.jsonl is refused with the file and the line") {
        const std::string dir = temp_dir("bad");
        const std::string ok = "{\"type\":\"step\",\"iteration\":1,\"loss\":2.5,\"lr\":0.1}\n";
        write_file(dir + "/metrics.jsonl", ok + ok + "{\"type\":\"step\",\"iteration\":3,\"loss\":2.5,\n" + ok);
        std::string e = error_of([&] { read_metrics(dir + "/metrics.jsonl"); });
        CHECK(contains(e, dir + "/metrics.jsonl:3: "));
        write_file(dir + "/metrics.jsonl", ok + "{\"type\":\"step\",\"iteration\":2,\"loss\":\"low\",\"lr\":0.1}\n");
        e = error_of([&] { read_metrics(dir + "/metrics.jsonl"); });
        CHECK(contains(e, "metrics.jsonl:2: "));
        CHECK(contains(e, "\"loss\" must be a number or null"));
        e = error_of([&] { parse_metrics(ok + ok + ok + "[1, 2]\n", "m.jsonl"); });
        CHECK(contains(e, "m.jsonl:4: a record must be a JSON object"));
        e = error_of([&] { parse_metrics("{\"iteration\":1}\n", "m.jsonl"); });
        CHECK(contains(e, "m.jsonl:1: a record needs a string field \"type\""));
        e = error_of([&] { read_metrics(dir + "/absent.jsonl"); });
        CHECK(contains(e, "absent.jsonl: cannot open"));
        write_file(dir + "/metrics.jsonl", "{\"type\":\"knn\",\"iteration\":1,\"top1\":0.5}\n");
        e = error_of([&] { plot_run(dir, "", Plotter::gnuplot); });
        CHECK(contains(e, "no \"step\" record"));
    }

    TEST_CASE("plot: each installed plotter draws a 1200x900 PNG; none installed names the packages") {
        const std::string dir = temp_dir("png");
        write_file(dir + "/metrics.jsonl", synthetic_metrics());
        CHECK(contains(no_plotter_message(), "gnuplot-nox"));
        CHECK(contains(no_plotter_message(), "python3-matplotlib"));
        int drawn = 0;
        for (const std::string name : {"gnuplot", "matplotlib"}) {
            const Plotter p = find_plotter(name);
            if (p == Plotter::none) {
                MESSAGE("skipped the ", name, " plot: ", no_plotter_message(name));
                continue;
            }
            const std::string png = dir + "/" + name + ".png";
            write_file(png, "stale");
            CHECK(plot_run(dir, png, p) == png);
            CHECK(png_size(png) == std::make_pair(1200u, 900u));
            CHECK(std::filesystem::file_size(png) > 1000);
            // Without kNN records the third panel says so instead of failing.
            const Metrics m = parse_metrics(read_all(dir + "/metrics.jsonl"), "m");
            plot_metrics(Metrics{m.steps, {}, {}}, dir + "/" + name + "_noknn.png", p, "no kNN");
            CHECK(png_size(dir + "/" + name + "_noknn.png") == std::make_pair(1200u, 900u));
            // linear / finetune runs: the validation top-1 / top-5 per epoch in the third panel.
            const Metrics val{m.steps, m.epochs, {KnnPoint{20, 0.5, 0.9, NAN, NAN}, KnnPoint{40, 0.6, 0.95, NAN, NAN}},
                              true};
            plot_metrics(val, dir + "/" + name + "_val.png", p, "validation");
            CHECK(png_size(dir + "/" + name + "_val.png") == std::make_pair(1200u, 900u));
            // A run with the online probe: its running top-1 and the final val point join the third panel.
            Metrics probe = m;
            for (StepPoint& sp : probe.steps) sp.probe_top1 = 0.1 + 0.01 * double(sp.iteration);
            probe.knn[0].probe_val_top1 = 0.55;
            plot_metrics(probe, dir + "/" + name + "_probe.png", p, "probe");
            CHECK(png_size(dir + "/" + name + "_probe.png") == std::make_pair(1200u, 900u));
            ++drawn;
        }
        if (drawn == 0) MESSAGE("no plotter installed: the PNG checks did not run");
        const Plotter any = find_plotter();
        if (any != Plotter::none) CHECK(contains(plot_after_run(dir), dir + "/metrics.png"));
        CHECK_THROWS_AS(find_plotter("gnu"), ConfigError);
    }

    TEST_CASE("plot: the command's exit codes for a bad command line") {
        auto run = [](std::vector<std::string> args) {
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(a.data());
            return plot_command(int(argv.size()), argv.data());
        };
        CHECK(run({"--out", "x.png"}) == 2);               // --run missing
        CHECK(run({"--run", "d", "--plotter", "excel"}) == 2);
        CHECK(run({"--run"}) == 2);
        CHECK(run({"--bogus", "1"}) == 2);
        CHECK(run({"--help"}) == 0);
    }

    TEST_CASE("profiler: a tiny model's steps give forward, backward and no-grad rows adding up to the step") {
        const std::string dir = temp_dir("prof");
        Tensor w1 = test::random_tensor({7, 5}, 1), b1 = test::random_tensor({7}, 2);
        Tensor w2 = test::random_tensor({4, 7}, 3), b2 = test::random_tensor({4}, 4);
        for (Tensor* t : {&w1, &b1, &w2, &b2}) t->requires_grad_();
        mlp_step(w1, b1, w2, b2, 9);  // not profiling: no effect
        profiler::Options o;
        o.trace_path = dir + "/trace.json";
        o.trace_steps = 2;
        profiler::start(o);
        CHECK_THROWS_AS(profiler::start(o), Error);
        for (int s = 0; s < 3; ++s) mlp_step(w1, b1, w2, b2, 10 + s);
        profiler::stop();
        mlp_step(w1, b1, w2, b2, 20);  // after stop: not counted
        const profiler::Report r = profiler::report();
        CHECK(r.steps == 2);  // step 1 is the warm-up
        CHECK(r.warmup_left_out);
        CHECK_FALSE(r.gpu_timed);
        const std::map<std::string, int64_t> calls = {
            {"linear", 6},          {"relu", 2},           {"cross_entropy", 2}, {"linear_backward", 4},
            {"softmax", 2},
            {"relu_backward", 2},   {"cross_entropy_backward", 2}, {"AccumulateGrad_backward", 8},
            {"no_grad in forward", 2}, {"no_grad in backward", 2}};
        for (const auto& [name, n] : calls) {
            const profiler::Row* row = find_row(r, name);
            REQUIRE_MESSAGE(row != nullptr, name);
            CHECK_MESSAGE(row->calls == n, name);
            CHECK(row->total_ms >= 0);
        }
        double sum = 0;
        for (const profiler::Row& row : r.ops) sum += row.total_ms;
        CHECK(sum == doctest::Approx(r.step_ms).epsilon(1e-6));
        REQUIRE(r.phases.size() == 2);
        CHECK(r.phases[0].name == "forward");
        CHECK(r.phases[0].total_ms + r.phases[1].total_ms <= r.step_ms * (1 + 1e-9));
        const std::string table = profiler::format_report(r);
        CHECK(contains(table, "linear_backward"));
        CHECK(contains(table, "% step"));

        const std::vector<json::Value> ev = trace_events(dir + "/trace.json");
        std::map<std::string, int> count;
        for (const json::Value& e : ev) ++count[e.find("name")->as_string("name")];
        CHECK(count["step"] == 2);  // trace_steps: the warm-up step and step 2
        CHECK(count["linear"] == 6);  // every op opens its own scope: the no-grad block's linear too
        CHECK(count["linear_backward"] == 4);
        CHECK(count["backward"] == 2);
        // Each backward node lies inside its step's backward phase.
        for (const json::Value& e : ev) {
            if (e.find("name")->as_string("name") != "relu_backward") continue;
            const double t0 = e.find("ts")->as_double("ts"), t1 = t0 + e.find("dur")->as_double("dur");
            bool inside = false;
            for (const json::Value& p : ev)
                if (p.find("name")->as_string("name") == "backward") {
                    const double p0 = p.find("ts")->as_double("ts"), p1 = p0 + p.find("dur")->as_double("dur");
                    inside = inside || (p0 <= t0 + 1e-3 && t1 <= p1 + 1e-3);
                }
            CHECK(inside);
        }
    }

    TEST_CASE("profiler: an op scope (SSL_PROFILE_OP) around other ops nests their scopes, times exclusive") {
        profiler::start(profiler::Options{});
        Tensor x = test::random_tensor({3, 4}, 5);
        x.requires_grad_();
        for (int s = 0; s < 2; ++s) {
            profiler::step_begin();
            profiler::phase("forward");
            {
                SSL_PROFILE_OP("fused_thing");
                (void)exp(relu(x));
            }
            (void)tanh(x);
            profiler::step_end();
        }
        profiler::stop();
        const profiler::Report r = profiler::report();
        REQUIRE(find_row(r, "fused_thing") != nullptr);
        CHECK(find_row(r, "fused_thing")->calls == 1);
        for (const char* inner : {"relu", "exp"}) {
            REQUIRE(find_row(r, inner) != nullptr);
            CHECK(find_row(r, inner)->calls == 1);
        }
        double sum = 0;
        for (const profiler::Row& row : r.ops) sum += row.total_ms;
        CHECK(sum == doctest::Approx(r.step_ms).epsilon(1e-6));
        REQUIRE(find_row(r, "tanh") != nullptr);
        CHECK(find_row(r, "tanh")->calls == 1);
    }

    TEST_CASE("pretrain --profile: the table names the model's ops and their backward; the trace parses") {
        const std::string out = temp_dir("pretrain_prof");
        PretrainOptions o = tiny_options(out, {"train.max_steps=3"});
        o.profile = true;
        std::ostringstream log;
        o.log = &log;
        run_pretrain(o);
        CHECK_FALSE(profiler::enabled());
        const std::string table = "\n" + read_all(out + "/profile.txt");
        for (const char* row : {"conv2d", "conv2d_backward", "depthwise_conv2d", "batch_norm", "batch_norm_backward",
                                "dino_loss", "dino_loss_backward", "(optimizer: outside ops)", "no_grad in forward"})
            CHECK_MESSAGE(contains(table, "\n" + std::string(row) + "  "), row);  // a row starts with the name
        CHECK(contains(table, "mean step"));
        CHECK(contains(log.str(), "profile table: " + out + "/profile.txt"));
        CHECK(profiler::report().steps == 2);
        const std::vector<json::Value> ev = trace_events(out + "/profile_trace.json");
        int steps = 0;
        for (const json::Value& e : ev) steps += e.find("name")->as_string("name") == "step";
        CHECK(steps == 3);
    }

    TEST_CASE("pretrain: a non-finite gradient stops the run naming the first parameter; the checkpoint stays") {
        const std::string out = temp_dir("nan_grad");
        PretrainOptions o = tiny_options(out, {"train.max_steps=6", "checkpoint.every_steps=1"});
        int calls = 0;
        std::string first_name, before;
        o.on_backward = [&](ssl::Method& m) {
            if (++calls != 4) return;  // the 4th step: iteration 3, after checkpoint_000000003
            before = read_all(out + "/checkpoint_000000003.safetensors");
            const auto params = m.named_parameters(true);
            REQUIRE(params.size() > 12);
            first_name = params[5].first;
            params[12].second->grad().data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
            params[5].second->grad().data<float>()[1] = std::numeric_limits<float>::infinity();
        };
        const std::string e = error_of([&] { run_pretrain(o); });
        REQUIRE(!first_name.empty());
        CHECK(contains(e, "the gradient of " + first_name + " is not finite"));
        CHECK(contains(first_name, "student."));
        CHECK(contains(e, "at iteration 3 (epoch 0, step 3)"));
        CHECK(contains(e, "1 more parameters"));
        CHECK(contains(e, "checkpoint_000000003.safetensors"));
        const std::vector<std::string> cps = list_checkpoints(out);
        REQUIRE(!cps.empty());
        CHECK(contains(cps.back(), "checkpoint_000000003.safetensors"));
        CHECK(!before.empty());
        CHECK(read_all(cps.back()) == before);
    }

    TEST_CASE("gradient check: NaN and Inf found by the bit test and by the sums; an overflowing sum is fine") {
        for (const bool by_sums : {false, true}) {
            const std::vector<Tensor> g = poisoned_gradients(Device::cpu());
            CHECK(nonfinite_gradients(g, by_sums) == std::vector<size_t>{1, 3});
            for (int64_t i = 0; i < 19; ++i) {  // every position of an odd size, both signs of Inf
                Tensor t = test::random_tensor({19}, uint64_t(40 + i));
                t.data<float>()[i] = i % 3 == 0 ? std::numeric_limits<float>::quiet_NaN()
                                                : (i % 3 == 1 ? 1 : -1) * std::numeric_limits<float>::infinity();
                CHECK(nonfinite_gradients({test::random_tensor({3}, 7), t}, by_sums) == std::vector<size_t>{1});
            }
        }
        CHECK(nonfinite_gradients({}).empty());
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("gradient check on the GPU: the sums path names the NaN and the Inf, not the overflow") {
        const std::vector<Tensor> g = poisoned_gradients(Device::cuda(0));
        CHECK(nonfinite_gradients(g) == std::vector<size_t>{1, 3});
    }

    TEST_CASE("profiler on the GPU: CUDA-event times of a tiny model's steps add up to the step") {
        const Device d = Device::cuda(0);
        Tensor w1 = test::random_tensor({7, 5}, 1).to(d), b1 = test::random_tensor({7}, 2).to(d);
        Tensor w2 = test::random_tensor({4, 7}, 3).to(d), b2 = test::random_tensor({4}, 4).to(d);
        for (Tensor* t : {&w1, &b1, &w2, &b2}) t->requires_grad_();
        profiler::Options o;
        o.device = d;
        profiler::start(o);
        for (int s = 0; s < 3; ++s) mlp_step(w1, b1, w2, b2, 10 + s, d);
        profiler::stop();
        const profiler::Report r = profiler::report();
        CHECK(r.gpu_timed);
        CHECK(r.gpu_error.empty());
        CHECK(r.steps == 2);
        CHECK(r.step_ms > 0);
        for (const char* name : {"linear", "linear_backward", "cross_entropy_backward", "no_grad in forward"})
            CHECK_MESSAGE(find_row(r, name) != nullptr, name);
        double sum = 0;
        for (const profiler::Row& row : r.ops) sum += row.total_ms;
        CHECK(sum == doctest::Approx(r.step_ms).epsilon(1e-3));
    }
}
