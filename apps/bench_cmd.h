// `sslight bench` (issue 9): the pre-training step of one SPEC row (configs/<method>_<model>_<recipe>.toml, built by
// make_training_setup exactly as pretrain builds it) timed on synthetic views: random u8 crops at the recipe's sizes
// through the loader's device path (per-step photometric parameters, augment_group), forward and loss, backward,
// the gradient check, the config's optimizer (with its clipping) at the schedule's epoch-20 values, the method's own
// updates and, under mpirun / srun, the data-parallel collectives. Prints samples/s, ms per step and per phase, and
// peak memory; --json writes the same numbers. No gradient contract of its own: it drives pretrain's pieces.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace sslight::apps {

struct BenchOptions {
    std::string method, model;       // required: dino | swav | moco, a backbone with a shipped config
    std::string recipe = "sslight";  // sslight | baseline
    std::string dtype = "f32";       // f32 (bf16: mixed precision is not implemented yet, a ConfigError)
    std::string device = "auto";     // auto (cuda:0 when a GPU is usable, else cpu) | cpu | cuda | cuda:N
    int64_t batch = 0;               // images per device and step; 0: 128 on a GPU, 16 on the CPU
    int steps = 20, warmup = 3;      // timed steps after untimed warm-up steps
    int global_size = 0, local_size = 0, n_local = -1;  // 0 / -1: the config's (the SPEC recipe's)
    std::string json_path;           // non-empty: the numbers as one JSON object in this file
    std::string configs_dir = "configs";
    bool help = false;
};

struct BenchPhase {
    std::string name;  // data, forward, communication, backward, grad_check, optimizer, method_update
    double ms = 0;     // mean per timed step; the phases add up to the step
};

struct BenchResult {
    std::string config_path, device, optimizer, views;  // views: "2x224 + 6x128"
    int world = 1;
    bool root = true;  // rank 0 (the only rank that prints)
    int64_t batch = 0, global_batch = 0, parameters = 0;  // parameters: the trainable (student) ones
    int epoch = 0;
    double lr = 0;
    std::vector<double> step_ms;     // each timed step, wall clock
    std::vector<BenchPhase> phases;  // in step order
    double samples_per_s = 0;        // batch / mean step time (this rank's images)
    double mean_step_ms = 0, median_step_ms = 0, min_step_ms = 0;
    double device_peak_mib = 0;      // the device allocator's peak over the timed steps (cuda pool or host tensors)
    double host_tensor_peak_mib = 0; // the engine's host allocator (live tensor bytes) over the timed steps
    double peak_rss_mib = 0;         // the process's peak resident set (getrusage), warm-up and setup included
    double first_loss = 0, last_loss = 0, setup_s = 0;
};

// Parses the options of `sslight bench` (argv holds the options only). Bad input throws ConfigError naming the
// option and what was expected; --dtype bf16 throws ConfigError saying mixed precision is not implemented yet.
// Resolves the defaults that depend on the device (batch).
BenchOptions parse_bench_args(int argc, char** argv);

// Runs the benchmark. `progress` (may be null) gets one line per step. Throws ConfigError for a missing config or a
// bad combination (e.g. MoCo's queue not a multiple of the batch), Error when no GPU is usable for a CUDA device or
// a loss or gradient is not finite.
BenchResult run_bench(const BenchOptions& options, std::ostream* progress = nullptr);

std::string format_bench(const BenchOptions& options, const BenchResult& result);  // the printed report
std::string bench_json(const BenchOptions& options, const BenchResult& result);    // one JSON object

// `sslight bench [options]`: parses, runs, prints the report (rank 0), writes --json. Returns the exit code: 0 done,
// 2 bad command line or config (the message goes to stderr); runtime errors throw (exit code 1 in main).
int bench_command(int argc, char** argv);
const char* bench_usage();

}  // namespace sslight::apps
