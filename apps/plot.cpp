// The metrics reader and the two plotters of apps/plot.h. gnuplot gets one script on its standard input with the
// data inline (datablocks); matplotlib gets a fixed script (-c) and the data as JSON on its standard input. Both
// run through posix_spawn with standard input and output redirected to temporary files, so a plotter that fails
// early can neither block nor kill this process, and its messages end up in the error.
#include "apps/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

#include "engine/io/json.h"

extern char** environ;

namespace sslight::apps {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A number field: NaN when absent or null; IoError naming the field when it is of another type.
double number_field(const json::Value& v, const char* key) {
    const json::Value* f = v.find(key);
    if (!f || f->type() == json::Value::Type::null) return kNaN;
    if (!f->is_number()) throw IoError(str("field \"", key, "\" must be a number or null"));
    return f->as_double(key);
}

int64_t iteration_field(const json::Value& v) {
    const json::Value* f = v.find("iteration");
    if (!f || !f->is_number()) throw IoError("field \"iteration\" is missing or not a number");
    return f->as_int("iteration");
}

// Adds one parsed record; the maps keep the last record per iteration.
void add_record(const json::Value& v, std::map<int64_t, StepPoint>& steps, std::map<int64_t, EpochPoint>& epochs,
                std::map<int64_t, KnnPoint>& knn, std::map<int64_t, KnnPoint>& val) {
    if (!v.is_object()) throw IoError("a record must be a JSON object");
    const json::Value* type = v.find("type");
    if (!type || !type->is_string()) throw IoError("a record needs a string field \"type\"");
    const std::string& t = type->as_string("type");
    if (t == "step") {
        const int64_t it = iteration_field(v);
        steps[it] = StepPoint{it, number_field(v, "loss"), number_field(v, "lr"), number_field(v, "probe_top1")};
    } else if (t == "epoch") {
        const int64_t it = iteration_field(v);
        epochs[it] = EpochPoint{it, number_field(v, "loss_mean")};
        const double top1 = number_field(v, "top1");
        if (std::isfinite(top1)) val[it] = KnnPoint{it, top1, number_field(v, "top5"), NAN, NAN};
    } else if (t == "knn") {
        const int64_t it = iteration_field(v);
        const double probe = knn.count(it) ? knn[it].probe_val_top1 : NAN;  // a "probe" record may come first
        knn[it] = KnnPoint{it,          number_field(v, "top1"),
                           number_field(v, "top5"), number_field(v, "random_init_top1"),
                           number_field(v, "random_init_top5"), probe};
    } else if (t == "probe") {
        const int64_t it = iteration_field(v);
        if (!knn.count(it)) knn[it] = KnnPoint{it, NAN, NAN, NAN, NAN, NAN};
        knn[it].probe_val_top1 = number_field(v, "val_top1");
    }
}

template <class T>
std::vector<T> values(const std::map<int64_t, T>& m) {
    std::vector<T> out;
    for (const auto& kv : m) out.push_back(kv.second);
    return out;
}

// A temporary file removed when it goes out of scope.
class TempFile {
public:
    explicit TempFile(const std::string& contents) {
        const char* dir = std::getenv("TMPDIR");
        path_ = std::string(dir && *dir ? dir : "/tmp") + "/sslight_plot_XXXXXX";
        const int fd = mkstemp(path_.data());
        if (fd < 0) throw IoError(str(path_, ": cannot create a temporary file: ", std::strerror(errno)));
        size_t done = 0;
        while (done < contents.size()) {
            const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                ::close(fd);
                throw IoError(str(path_, ": cannot write a temporary file: ", std::strerror(errno)));
            }
            done += size_t(n);
        }
        ::close(fd);
    }
    ~TempFile() { ::unlink(path_.c_str()); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

struct ToolResult {
    int status = -1;     // exit code; -1 when it could not start or was killed by a signal
    std::string output;  // stdout and stderr together (or why it could not start)
};

// Runs argv[0] (searched on PATH) with `input` on its standard input.
ToolResult run_tool(const std::vector<std::string>& argv, const std::string& input) {
    TempFile in(input), out("");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in.path().c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.path().c_str(), O_WRONLY | O_TRUNC, 0);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ToolResult r;
    if (rc != 0) {
        r.output = str("cannot run ", argv[0], ": ", std::strerror(rc));
        return r;
    }
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    std::ifstream f(out.path(), std::ios::binary);
    r.output.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return r;
}

bool on_path(const std::string& exe) {
    const char* path = std::getenv("PATH");
    std::istringstream is(path ? path : "");
    for (std::string dir; std::getline(is, dir, ':');)
        if (!dir.empty() && ::access((dir + "/" + exe).c_str(), X_OK) == 0) return true;
    return false;
}

constexpr const char* kPython = "/usr/bin/python3";

bool has_matplotlib() {
    return ::access(kPython, X_OK) == 0 && run_tool({kPython, "-c", "import matplotlib"}, "").status == 0;
}

std::string num(double v) {
    if (!std::isfinite(v)) return "NaN";
    std::ostringstream os;
    os.precision(9);
    os << v;
    return os.str();
}

// A gnuplot double-quoted string (backslash escapes are processed inside double quotes).
std::string gp_quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

void gp_block(std::ostringstream& os, const char* name, const std::vector<std::vector<double>>& rows) {
    os << "$" << name << " << EOD\n";
    for (const auto& row : rows) {
        for (size_t i = 0; i < row.size(); ++i) os << (i ? " " : "") << num(row[i]);
        os << "\n";
    }
    os << "EOD\n";
}

bool any_finite(const std::vector<std::vector<double>>& rows, size_t col) {
    return std::any_of(rows.begin(), rows.end(), [&](const auto& r) { return std::isfinite(r[col]); });
}

// Columns: steps (iteration, loss, lr, probe top-1 %), epochs (iteration, loss mean), knn (iteration, top-1,
// top-5, random top-1, random top-5, probe val top-1; %).
void table_rows(const Metrics& m, std::vector<std::vector<double>>& steps, std::vector<std::vector<double>>& epochs,
                std::vector<std::vector<double>>& knn) {
    for (const StepPoint& p : m.steps) steps.push_back({double(p.iteration), p.loss, p.lr, 100 * p.probe_top1});
    for (const EpochPoint& p : m.epochs) epochs.push_back({double(p.iteration), p.loss_mean});
    for (const KnnPoint& p : m.knn)
        knn.push_back({double(p.iteration), 100 * p.top1, 100 * p.top5, 100 * p.random_top1, 100 * p.random_top5,
                       100 * p.probe_val_top1});
}

// The three panels; a series without a finite value is left out (gnuplot stops on a plot with no valid point).
std::string gnuplot_script(const Metrics& m, const std::string& png, const std::string& title) {
    std::vector<std::vector<double>> steps, epochs, knn;
    table_rows(m, steps, epochs, knn);
    const double xmax = std::max(1.0, steps.back()[0]) * 1.03;
    std::ostringstream os;
    os << "set terminal pngcairo size 1200,900 noenhanced font \",10\"\nset output " << gp_quote(png) << "\n";
    gp_block(os, "steps", steps);
    gp_block(os, "epochs", epochs);
    gp_block(os, "knn", knn);
    os << "set multiplot layout 3,1 title " << gp_quote(title) << "\nset grid\nset key top right\n"
       << "set xrange [0:" << num(xmax) << "]\n";
    os << "set ylabel \"loss\"\nplot ";
    if (any_finite(steps, 1)) os << "$steps using 1:2 with lines lw 1.5 title \"loss (logged steps)\"";
    if (any_finite(epochs, 1))
        os << (any_finite(steps, 1) ? ", " : "") << "$epochs using 1:2 with linespoints pt 7 title \"epoch mean\"";
    if (!any_finite(steps, 1) && !any_finite(epochs, 1)) os << "1/0 notitle";
    os << "\nset ylabel \"learning rate\"\nset format y \"%.2g\"\nplot "
       << (any_finite(steps, 2) ? "$steps using 1:3 with lines lw 1.5 title \"lr\"" : "1/0 notitle") << "\n";
    os << "set format y \"%g\"\nset xlabel \"iteration\"\nset ylabel \""
       << (m.validation ? "validation accuracy (%)" : any_finite(steps, 3) ? "kNN / probe accuracy (%)" : "kNN accuracy (%)")
       << "\"\nset yrange [0:100]\n"
       << "set key top left\n";
    const char* knn_series[] = {"trained top-1", "trained top-5", "random init top-1", "random init top-5"};
    const char* val_series[] = {"val top-1", "val top-5", "", ""};
    const char* const* series = m.validation ? val_series : knn_series;
    std::string plots;
    for (size_t c = 1; c <= 4; ++c) {
        if (!any_finite(knn, c)) continue;
        plots += str(plots.empty() ? "" : ", ", "$knn using 1:", c + 1, " with linespoints pt ", c <= 2 ? 7 : 6,
                     c <= 2 ? "" : " dt 2", " title \"", series[c - 1], "\"");
    }
    if (any_finite(steps, 3))
        plots += str(plots.empty() ? "" : ", ", "$steps using 1:4 with lines lw 1 title \"online probe top-1 (train views)\"");
    if (any_finite(knn, 5))
        plots += str(plots.empty() ? "" : ", ", "$knn using 1:6 with points pt 9 ps 2 title \"online probe val top-1\"");
    if (plots.empty())
        os << "set label 1 \"no kNN evaluation in this run\" at graph 0.5, graph 0.5 center\nplot 1/0 notitle\n";
    else
        os << "plot " << plots << "\n";
    os << "unset multiplot\n";
    return os.str();
}

constexpr const char* kMatplotlibScript = R"PY(
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = json.load(sys.stdin)
f = lambda v: float("nan") if v is None else v
col = lambda rows, i: [f(r[i]) for r in rows]
fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(12, 9), dpi=100, sharex=True)
fig.suptitle(d["title"])
s, e, k = d["steps"], d["epochs"], d["knn"]
a1.plot(col(s, 0), col(s, 1), label="loss (logged steps)")
if e:
    a1.plot(col(e, 0), col(e, 1), "o-", label="epoch mean")
a1.set_ylabel("loss"); a1.grid(True); a1.legend(loc="upper right")
a2.plot(col(s, 0), col(s, 2), label="lr")
a2.set_ylabel("learning rate"); a2.grid(True); a2.legend(loc="upper right")
styles = [("trained top-1", "o-"), ("trained top-5", "s-"), ("random init top-1", "o--"), ("random init top-5", "s--")]
if d["validation"]:
    styles = [("val top-1", "o-"), ("val top-5", "s-")]
probe = [r for r in s if r[3] is not None]
if probe:
    a3.plot(col(probe, 0), col(probe, 3), "-", lw=1, label="online probe top-1 (train views)")
if k:
    for i, (label, style) in enumerate(styles):
        a3.plot(col(k, 0), col(k, i + 1), style, label=label)
    if any(r[5] is not None for r in k):
        a3.plot(col(k, 0), col(k, 5), "^", ms=9, label="online probe val top-1")
if k or probe:
    a3.legend(loc="upper left")
else:
    a3.text(0.5, 0.5, "no kNN evaluation in this run", ha="center", va="center", transform=a3.transAxes)
a3.set_ylim(0, 100); a3.set_ylabel("validation accuracy (%)" if d["validation"] else "kNN / probe accuracy (%)" if probe else "kNN accuracy (%)"); a3.set_xlabel("iteration"); a3.grid(True)
fig.tight_layout()
fig.savefig(d["out"], format="png")
)PY";

json::Value json_num(double v) { return std::isfinite(v) ? json::Value::make_number(num(v)) : json::Value(); }

json::Value json_rows(const std::vector<std::vector<double>>& rows) {
    json::Value a = json::Value::make_array();
    for (const auto& row : rows) {
        json::Value r = json::Value::make_array();
        for (double v : row) r.push(json_num(v));
        a.push(std::move(r));
    }
    return a;
}

std::string matplotlib_input(const Metrics& m, const std::string& png, const std::string& title) {
    std::vector<std::vector<double>> steps, epochs, knn;
    table_rows(m, steps, epochs, knn);
    json::Value d = json::Value::make_object();
    d.set("out", json::Value::make_string(png));
    d.set("title", json::Value::make_string(title));
    d.set("steps", json_rows(steps));
    d.set("epochs", json_rows(epochs));
    d.set("knn", json_rows(knn));
    d.set("validation", json::Value::make_bool(m.validation));
    return d.dump();
}

bool is_png(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    char sig[8] = {};
    return f.read(sig, 8) && std::memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0;
}

std::string base_name(std::string path) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Metrics parse_metrics(const std::string& text, const std::string& source) {
    std::map<int64_t, StepPoint> steps;
    std::map<int64_t, EpochPoint> epochs;
    std::map<int64_t, KnnPoint> knn, val;
    std::istringstream is(text);
    int line_no = 0;
    for (std::string line; std::getline(is, line);) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            add_record(json::parse(line, "record"), steps, epochs, knn, val);
        } catch (const IoError& e) {
            throw IoError(str(source, ":", line_no, ": ", e.what(), " (each line must be one JSON object as written "
                                                                     "by sslight pretrain)"));
        }
    }
    if (knn.empty() && !val.empty()) return Metrics{values(steps), values(epochs), values(val), true};
    return Metrics{values(steps), values(epochs), values(knn), false};
}

Metrics read_metrics(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw IoError(str(path, ": cannot open the metrics file (expected the metrics.jsonl of a pretrain run)"));
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return parse_metrics(text, path);
}

Plotter find_plotter(const std::string& preference) {
    if (preference != "auto" && preference != "gnuplot" && preference != "matplotlib")
        throw ConfigError(str("plotter \"", preference, "\": expected auto, gnuplot or matplotlib"));
    if (preference != "matplotlib" && on_path("gnuplot")) return Plotter::gnuplot;
    if (preference != "gnuplot" && has_matplotlib()) return Plotter::matplotlib;
    return Plotter::none;
}

const char* plotter_name(Plotter p) {
    return p == Plotter::gnuplot ? "gnuplot" : p == Plotter::matplotlib ? "matplotlib" : "none";
}

std::string no_plotter_message(const std::string& preference) {
    const std::string gp = "gnuplot on PATH (Debian: apt-get install gnuplot-nox)";
    const std::string mp = "matplotlib for /usr/bin/python3 (Debian: apt-get install python3-matplotlib)";
    if (preference == "gnuplot") return "no plotter: found no " + gp;
    if (preference == "matplotlib") return "no plotter: found no " + mp;
    return "no plotter: found neither " + gp + " nor " + mp;
}

void plot_metrics(const Metrics& m, const std::string& png, Plotter plotter, const std::string& title) {
    SSL_CHECK(plotter != Plotter::none, "plot_metrics: no plotter given");
    if (m.steps.empty()) throw IoError(str("no \"step\" record in the metrics: nothing to plot for ", png));
    if (png.find('\n') != std::string::npos) throw IoError("the PNG path must not contain a line break");
    const size_t slash = png.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : png.substr(0, std::max<size_t>(slash, 1));
    struct stat sb {};
    if (stat(dir.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode))
        throw IoError(str(png, ": cannot write the plot: the folder ", dir, " does not exist"));
    ::unlink(png.c_str());  // a stale PNG must not pass for a new one
    const ToolResult r = plotter == Plotter::gnuplot
                             ? run_tool({"gnuplot"}, gnuplot_script(m, png, title))
                             : run_tool({kPython, "-c", kMatplotlibScript}, matplotlib_input(m, png, title));
    if (r.status != 0)
        throw Error(str(plotter_name(plotter), " failed (exit status ", r.status, ") drawing ", png, ": ", r.output));
    if (!is_png(png)) throw Error(str(plotter_name(plotter), " wrote no PNG at ", png, ": ", r.output));
}

std::string plot_run(const std::string& run_dir, const std::string& out_png, Plotter plotter) {
    const Metrics m = read_metrics(run_dir + "/metrics.jsonl");
    const std::string png = out_png.empty() ? run_dir + "/metrics.png" : out_png;
    plot_metrics(m, png, plotter, "sslight run " + base_name(run_dir));
    return png;
}

std::string plot_after_run(const std::string& run_dir) {
    const Plotter p = find_plotter();
    if (p == Plotter::none) return "plot: skipped, " + no_plotter_message();
    try {
        return str("plot: ", plot_run(run_dir, "", p), " (", plotter_name(p), ")");
    } catch (const Error& e) {
        return str("plot: not drawn: ", e.what());
    }
}

namespace {

constexpr const char* kPlotUsage =
    "usage: sslight plot --run DIR [--out FILE.png] [--plotter auto|gnuplot|matplotlib]\n"
    "  Draws the loss (logged steps and epoch means), learning-rate and kNN curves of a pre-training run, read from\n"
    "  DIR/metrics.jsonl, into one PNG (default DIR/metrics.png) with gnuplot, or with matplotlib through\n"
    "  /usr/bin/python3 when gnuplot is absent. sslight pretrain draws it by itself at the end of a run.\n"
    "  exit codes: 0 drawn, 1 unreadable or malformed metrics (the message names the line) or the plotter failed,\n"
    "  2 bad command line, 3 no plotter installed (Debian: apt-get install gnuplot-nox, or python3-matplotlib)\n";

int usage_error(const std::string& msg) {
    std::cerr << "sslight plot: " << msg << "\n\n" << kPlotUsage;
    return 2;
}

}  // namespace

int plot_command(int argc, char** argv) {
    std::string run, out, preference = "auto";
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << kPlotUsage, 0;
        if (a != "--run" && a != "--out" && a != "--plotter") return usage_error("unknown option '" + a + "'");
        if (i + 1 >= argc) return usage_error("option " + a + " needs a value");
        (a == "--run" ? run : a == "--out" ? out : preference) = argv[++i];
    }
    if (run.empty()) return usage_error("--run DIR is required (the output folder of sslight pretrain)");
    if (preference != "auto" && preference != "gnuplot" && preference != "matplotlib")
        return usage_error("--plotter expects auto, gnuplot or matplotlib, got '" + preference + "'");
    const Plotter p = find_plotter(preference);
    if (p == Plotter::none) {
        std::cerr << "sslight plot: " << no_plotter_message(preference) << "\n";
        return 3;
    }
    const std::string png = plot_run(run, out, p);
    std::cout << "plot: " << png << " (" << plotter_name(p) << ")\n";
    return 0;
}

}  // namespace sslight::apps
