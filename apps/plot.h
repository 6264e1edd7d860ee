// `sslight plot` (issue 8): reads a run's metrics.jsonl (written by apps/pretrain.cpp: "step", "epoch", "knn" and
// "probe" records) and draws the loss, learning-rate and kNN curves into one PNG with gnuplot (Debian gnuplot-nox) or,
// when gnuplot is absent, with matplotlib run by /usr/bin/python3 (Debian python3-matplotlib). Pre-training calls
// plot_after_run at its end. The plotters run as child processes; nothing here links a plotting library.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/check.h"

namespace sslight::apps {

// NaN where a record holds null (a non-finite value) or lacks the field.
struct StepPoint {
    int64_t iteration = 0;
    double loss = 0, lr = 0;
    double probe_top1 = NAN;  // the online probe's top-1 on the step's augmented views (eval.online_probe)
};
struct EpochPoint {
    int64_t iteration = 0;
    double loss_mean = 0;
};
struct KnnPoint {
    int64_t iteration = 0;
    double top1 = 0, top5 = 0, random_top1 = 0, random_top5 = 0;  // fractions in [0, 1]
    double probe_val_top1 = NAN;                                   // the online probe on the val images
};
// knn holds the "knn" records; a run without them whose "epoch" records carry top1 / top5 (sslight linear and
// finetune) gets those as its accuracy points instead, with validation set (random init then NaN).
struct Metrics {
    std::vector<StepPoint> steps;
    std::vector<EpochPoint> epochs;
    std::vector<KnnPoint> knn;
    bool validation = false;
};

// Parses metrics.jsonl text. A malformed line, a record without a string "type" or a field of the wrong type
// throws IoError "<source>:<line>: ..."; records of other types are skipped. A resumed run repeats the iterations
// after its checkpoint: the later record of an iteration wins. Points come sorted by iteration.
Metrics parse_metrics(const std::string& text, const std::string& source);
Metrics read_metrics(const std::string& path);

enum class Plotter { none, gnuplot, matplotlib };
// "auto": gnuplot when it is on PATH, else matplotlib when /usr/bin/python3 imports it, else none.
// "gnuplot" / "matplotlib": that one when available, else none. Anything else throws ConfigError.
Plotter find_plotter(const std::string& preference = "auto");
const char* plotter_name(Plotter p);
// What to install when find_plotter finds nothing (names the Debian packages).
std::string no_plotter_message(const std::string& preference = "auto");

// Draws `m` into `png` (1200 x 900) with `plotter` (not none): loss per step with the epoch means, lr per step,
// kNN top-1/top-5 of the trained backbone against the random init (or the validation top-1/top-5 per epoch), and
// when the run had one, the online probe's running top-1 with its final val top-1. Throws Error with the plotter's output when it
// fails, IoError when `m` has no step to draw.
void plot_metrics(const Metrics& m, const std::string& png, Plotter plotter, const std::string& title);

// read_metrics(<run_dir>/metrics.jsonl), then plot_metrics into out_png (empty: <run_dir>/metrics.png) with the
// run folder's name as the title. Returns the PNG's path.
std::string plot_run(const std::string& run_dir, const std::string& out_png, Plotter plotter);

// The end of a pre-training run: plots it when a plotter is available and returns one line for the log, the PNG
// path or why there is no plot (never throws: a missing plotter or a failed plot is a note, not an error).
std::string plot_after_run(const std::string& run_dir);

// `sslight plot --run DIR [--out FILE.png] [--plotter auto|gnuplot|matplotlib]`. Returns the exit code: 0 drawn,
// 2 bad command line, 3 no plotter installed (the message names the package); a malformed metrics file or a failed
// plotter throws (exit code 1 in main).
int plot_command(int argc, char** argv);

}  // namespace sslight::apps
