// The profiler behind engine/profiler.h: per step, a flat list of events (scopes and forward-op intervals) with
// their parent; at step_end the GPU events are resolved (one synchronisation per step), exclusive times are
// added to the table's rows and, for the first trace_steps steps, the events are appended to the Chrome trace.
// A forward op is charged the interval since the previous boundary (an op end or any scope edge): ops report
// their end to the tape after computing, and module glue between two ops is small next to either op.
#include "engine/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "engine/check.h"
#include "engine/io/json.h"
#ifdef SSLIGHT_WITH_CUDA
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>
#endif

namespace sslight::profiler {
namespace detail {
std::atomic<bool> g_on{false};
}  // namespace detail
namespace {

using Clock = std::chrono::steady_clock;

struct Event {
    int name = 0;  // interned display name
    Kind kind = Kind::forward;
    int parent = -1;          // the enclosing scope's event in this step (-1: the step itself)
    int64_t t0 = 0, t1 = 0;   // ns since start()
    int e0 = -1, e1 = -1;     // CUDA event slots (-1: none)
    int64_t child_ns = 0;
    double gpu_t0_ms = 0, gpu_ms = 0, child_gpu_ms = 0;  // from the step's first CUDA event
};

struct Open {
    int event;
    const void* key;
};

struct Stat {
    Kind kind = Kind::forward;
    int64_t calls = 0;
    double ms = 0;
};

// Index 0: the first step (warm-up), index 1: every later step.
struct Totals {
    std::map<int, Stat> rows, phases;
    double step_ms = 0;
    int64_t steps = 0;
};

struct State {
    Options opt;
    std::thread::id owner;
    Clock::time_point t_start;
    bool gpu = false;
    std::string gpu_error;  // the first failed CUDA event call (GPU times are then incomplete)
    std::unordered_map<std::string, int> ids;
    std::vector<std::string> names;
    bool in_step = false;
    int64_t step_no = 0;
    std::vector<Event> events;
    std::vector<Open> stack;
    int64_t boundary = 0;
    int boundary_ev = -1;
    std::vector<void*> gpu_events;
    int gpu_used = 0;
    Totals totals[2];
    std::vector<int> phase_order;
    std::ofstream trace;
};

std::unique_ptr<State> g_state;
char kStepKey, kPhaseKey;  // addresses only: the keys of the step and phase scopes

State& st() { return *g_state; }

bool mine() { return g_state && g_state->owner == std::this_thread::get_id(); }

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - st().t_start).count();
}

int intern(const std::string& name) {
    auto [it, added] = st().ids.emplace(name, static_cast<int>(st().names.size()));
    if (added) st().names.push_back(name);
    return it->second;
}

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::forward: return "forward";
        case Kind::backward: return "backward";
        case Kind::engine: return "engine";
        case Kind::phase: return "phase";
        case Kind::step: return "step";
    }
    return "?";
}

// Engine blocks (no_grad, grad_sum) are named with the phase they run in: "no_grad in forward" is the teacher's
// forward, "no_grad in backward" the autograd walk around the backward nodes.
std::string display_name(const char* name, Kind kind, int parent) {
    if (kind == Kind::backward) return std::string(name) + "_backward";
    if (kind == Kind::engine && parent >= 0 && st().events[size_t(parent)].kind == Kind::phase)
        return std::string(name) + " in " + st().names[size_t(st().events[size_t(parent)].name)];
    return name;
}

// Records a CUDA event on the device's compute stream; -1 on the CPU or after a CUDA failure (never throws: it
// runs in destructors).
int gpu_mark() {
    State& s = st();
    if (!s.gpu || !s.gpu_error.empty()) return -1;
#ifdef SSLIGHT_WITH_CUDA
    if (s.gpu_used == static_cast<int>(s.gpu_events.size())) {
        cudaEvent_t e = nullptr;
        const cudaError_t err = cudaEventCreate(&e);
        if (err != cudaSuccess) {
            s.gpu_error = str("cudaEventCreate: ", cudaGetErrorString(err));
            return -1;
        }
        s.gpu_events.push_back(e);
    }
    auto* e = static_cast<cudaEvent_t>(s.gpu_events[size_t(s.gpu_used)]);
    const cudaError_t err = cudaEventRecord(e, reinterpret_cast<cudaStream_t>(runtime::stream(s.opt.device)));
    if (err != cudaSuccess) {
        s.gpu_error = str("cudaEventRecord: ", cudaGetErrorString(err));
        return -1;
    }
    return s.gpu_used++;
#else
    return -1;
#endif
}

void nvtx_push(const std::string& name) {
#ifdef SSLIGHT_WITH_CUDA
    nvtxRangePushA(name.c_str());
#else
    (void)name;
#endif
}

void nvtx_pop() {
#ifdef SSLIGHT_WITH_CUDA
    nvtxRangePop();
#endif
}

void nvtx_mark(const std::string& name) {
#ifdef SSLIGHT_WITH_CUDA
    nvtxMarkA(name.c_str());
#else
    (void)name;
#endif
}

void open_event(const char* name, Kind kind, const void* key) {
    State& s = st();
    Event e;
    e.kind = kind;
    e.parent = s.stack.empty() ? -1 : s.stack.back().event;
    e.name = intern(display_name(name, kind, e.parent));
    e.t0 = now_ns();
    e.e0 = gpu_mark();
    s.events.push_back(e);
    s.stack.push_back({static_cast<int>(s.events.size()) - 1, key});
    s.boundary = e.t0, s.boundary_ev = e.e0;
    nvtx_push(s.names[size_t(e.name)]);
}

void close_top() {
    State& s = st();
    Event& e = s.events[size_t(s.stack.back().event)];
    s.stack.pop_back();
    e.t1 = now_ns();
    e.e1 = gpu_mark();
    if (e.parent >= 0) s.events[size_t(e.parent)].child_ns += e.t1 - e.t0;
    s.boundary = e.t1, s.boundary_ev = e.e1;
    nvtx_pop();
}

// GPU times of the step's events relative to its first CUDA event (the step's begin): one synchronisation.
void resolve_gpu() {
    State& s = st();
    if (!s.gpu || s.gpu_used == 0 || !s.gpu_error.empty()) return;
#ifdef SSLIGHT_WITH_CUDA
    auto ev = [&](int i) { return static_cast<cudaEvent_t>(s.gpu_events[size_t(i)]); };
    cudaError_t err = cudaEventSynchronize(ev(s.gpu_used - 1));
    std::vector<float> off(size_t(s.gpu_used), 0.f);
    for (int i = 1; i < s.gpu_used && err == cudaSuccess; ++i)
        err = cudaEventElapsedTime(&off[size_t(i)], ev(0), ev(i));
    if (err != cudaSuccess) {
        s.gpu_error = str("cudaEventElapsedTime: ", cudaGetErrorString(err));
        return;
    }
    for (Event& e : s.events) {
        if (e.e0 < 0 || e.e1 < 0) continue;
        e.gpu_t0_ms = off[size_t(e.e0)];
        e.gpu_ms = off[size_t(e.e1)] - off[size_t(e.e0)];
        if (e.parent >= 0) s.events[size_t(e.parent)].child_gpu_ms += e.gpu_ms;
    }
#endif
}

// Adds the step's exclusive times to the rows, its phases' inclusive times to the phase totals.
void aggregate() {
    State& s = st();
    Totals& t = s.totals[s.step_no == 1 ? 0 : 1];
    const bool gpu = s.gpu && s.gpu_error.empty();
    for (const Event& e : s.events) {
        const double incl = gpu ? e.gpu_ms : double(e.t1 - e.t0) * 1e-6;
        const double self = gpu ? e.gpu_ms - e.child_gpu_ms : double(e.t1 - e.t0 - e.child_ns) * 1e-6;
        int row = e.name;
        if (e.kind == Kind::phase) {
            Stat& p = t.phases[e.name];
            p.kind = Kind::phase, ++p.calls, p.ms += incl;
            if (std::find(s.phase_order.begin(), s.phase_order.end(), e.name) == s.phase_order.end())
                s.phase_order.push_back(e.name);
            row = intern("(" + s.names[size_t(e.name)] + ": outside ops)");
        } else if (e.kind == Kind::step) {
            t.step_ms += incl, ++t.steps;
            row = intern("(step: outside phases)");
        }
        Stat& r = t.rows[row];
        r.kind = e.kind, ++r.calls, r.ms += self;
    }
}

std::string fixed(double v, int digits) {
    char b[64];
    std::snprintf(b, sizeof(b), "%.*f", digits, v);
    return b;
}

void write_trace_event(const std::string& name, Kind kind, int tid, double ts_us, double dur_us) {
    State& s = st();
    s.trace << ",\n{\"name\":" << json::quote(name) << ",\"cat\":\"" << kind_name(kind)
            << "\",\"ph\":\"X\",\"pid\":1,\"tid\":" << tid << ",\"ts\":" << fixed(ts_us, 3)
            << ",\"dur\":" << fixed(std::max(dur_us, 0.0), 3) << ",\"args\":{\"step\":" << s.step_no << "}}";
}

void write_trace() {
    State& s = st();
    if (!s.trace.is_open() || s.step_no > s.opt.trace_steps) return;
    const bool gpu = s.gpu && s.gpu_error.empty();
    const double step_t0_us = s.events.empty() ? 0 : double(s.events[0].t0) * 1e-3;
    for (const Event& e : s.events) {
        const std::string& name = s.names[size_t(e.name)];
        write_trace_event(name, e.kind, 1, double(e.t0) * 1e-3, double(e.t1 - e.t0) * 1e-3);
        if (gpu && e.e0 >= 0 && e.e1 >= 0)
            write_trace_event(name, e.kind, 2, step_t0_us + e.gpu_t0_ms * 1e3, e.gpu_ms * 1e3);
    }
    s.trace.flush();
}

// Drops an unfinished step (an exception left it open), closing its NVTX ranges.
void discard_step() {
    State& s = st();
    for (size_t i = 0; i < s.stack.size(); ++i) nvtx_pop();
    s.stack.clear();
    s.events.clear();
    s.in_step = false;
}

void open_trace(State& s) {
    s.trace.open(s.opt.trace_path, std::ios::trunc);
    SSL_CHECK_T(IoError, s.trace.good(), "profiler: cannot write the trace file ", s.opt.trace_path);
    s.trace << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n"
            << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"sslight "
            << s.opt.device.str() << "\"}},\n"
            << "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{\"name\":\"host (wall clock)\"}}";
    if (s.gpu)
        s.trace << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":2,\"args\":{\"name\":"
                   "\"GPU stream (CUDA events, aligned at each step's start)\"}}";
}

}  // namespace

namespace detail {

void scope_begin(const char* name, Kind kind, const void* key) {
    if (!mine() || !st().in_step) return;
    open_event(name, kind, key);
}

void scope_end(const void* key) {
    if (!mine() || !st().in_step) return;
    std::vector<Open>& stack = st().stack;
    auto it = std::find_if(stack.rbegin(), stack.rend(), [&](const Open& o) { return o.key == key; });
    if (it == stack.rend()) return;
    const size_t depth = static_cast<size_t>(stack.rend() - it);  // entries up to and including `key`
    while (stack.size() >= depth) close_top();
}

void op_end(const char* name) {
    if (!mine() || !st().in_step) return;
    State& s = st();
    if (!s.stack.empty() && s.events[size_t(s.stack.back().event)].kind == Kind::forward) return;
    Event e;
    e.kind = Kind::forward;
    e.parent = s.stack.empty() ? -1 : s.stack.back().event;
    e.name = intern(name);
    e.t0 = s.boundary, e.e0 = s.boundary_ev;
    e.t1 = now_ns(), e.e1 = gpu_mark();
    if (e.parent >= 0) s.events[size_t(e.parent)].child_ns += e.t1 - e.t0;
    s.events.push_back(e);
    s.boundary = e.t1, s.boundary_ev = e.e1;
    nvtx_mark(s.names[size_t(e.name)]);
}

void step_begin() {
    if (!mine()) return;
    State& s = st();
    if (s.in_step) discard_step();
    s.in_step = true;
    ++s.step_no;
    s.gpu_used = 0;
    open_event("step", Kind::step, &kStepKey);
}

void phase(const char* name) {
    if (!mine() || !st().in_step) return;
    while (st().stack.size() > 1) close_top();
    open_event(name, Kind::phase, &kPhaseKey);
}

void step_end() {
    if (!mine() || !st().in_step) return;
    State& s = st();
    while (!s.stack.empty()) close_top();
    s.in_step = false;
    resolve_gpu();
    aggregate();
    write_trace();
    s.events.clear();
}

}  // namespace detail

void start(const Options& options) {
    SSL_CHECK(!enabled(), "profiler: start() while already profiling");
    SSL_CHECK(options.trace_steps >= 0, "profiler: trace_steps must be >= 0, got ", options.trace_steps);
    auto s = std::make_unique<State>();
    s->opt = options;
    s->owner = std::this_thread::get_id();
    s->t_start = Clock::now();
    s->gpu = runtime::cuda_built() && options.device.is_cuda();
    if (!options.trace_path.empty()) open_trace(*s);
    g_state = std::move(s);
    detail::g_on.store(true);
}

void stop() {
    if (!g_state || !enabled()) return;
    detail::g_on.store(false);
    State& s = st();
    if (s.in_step) discard_step();
    if (s.trace.is_open()) {
        s.trace << "\n]}\n";
        s.trace.close();
    }
#ifdef SSLIGHT_WITH_CUDA
    for (void* e : s.gpu_events) cudaEventDestroy(static_cast<cudaEvent_t>(e));
#endif
    s.gpu_events.clear();
}

Report report() {
    Report r;
    if (!g_state) return r;
    const State& s = *g_state;
    const int b = s.totals[1].steps > 0 ? 1 : 0;
    const Totals& t = s.totals[b];
    r.warmup_left_out = b == 1 && s.totals[0].steps > 0;
    r.steps = t.steps;
    r.step_ms = t.step_ms;
    r.gpu_timed = s.gpu && s.gpu_error.empty();
    r.gpu_error = s.gpu_error;
    r.device = s.opt.device.str();
    for (const auto& [id, stat] : t.rows)
        r.ops.push_back({s.names[size_t(id)], stat.kind, stat.calls, std::max(stat.ms, 0.0)});
    std::stable_sort(r.ops.begin(), r.ops.end(), [](const Row& a, const Row& b) { return a.total_ms > b.total_ms; });
    for (int id : s.phase_order) {
        auto it = t.phases.find(id);
        if (it != t.phases.end())
            r.phases.push_back({s.names[size_t(id)], Kind::phase, it->second.calls, it->second.ms});
    }
    return r;
}

std::string format_report(const Report& r) {
    std::ostringstream os;
    if (r.steps == 0) return "profile: no step was timed\n";
    os << "profile: " << r.steps << " step" << (r.steps > 1 ? "s" : "") << " on " << r.device << ", "
       << (r.gpu_timed ? "GPU time from CUDA events" : "wall clock")
       << (r.warmup_left_out ? " (step 1, the warm-up, is in the trace but not in the table)" : "") << "\n";
    if (!r.gpu_error.empty())
        os << "CUDA-event timing failed (" << r.gpu_error << "): steps after the failure are host wall clock\n";
    const double step = r.step_ms > 0 ? r.step_ms : 1;
    os << "mean step " << fixed(r.step_ms / double(r.steps), 3) << " ms";
    for (size_t i = 0; i < r.phases.size(); ++i)
        os << (i ? " + " : " = ") << r.phases[i].name << " " << fixed(100 * r.phases[i].total_ms / step, 1) << "%";
    size_t w = 24;
    for (const Row& row : r.ops) w = std::max(w, row.name.size());
    char line[512];
    std::snprintf(line, sizeof(line), "\n%-*s %9s %12s %12s %7s\n", int(w), "op", "calls", "total ms", "mean us",
                  "% step");
    os << line;
    for (const Row& row : r.ops) {
        const double mean_us = 1e3 * row.total_ms / double(std::max<int64_t>(row.calls, 1));
        std::snprintf(line, sizeof(line), "%-*s %9lld %12.3f %12.1f %7.2f\n", int(w), row.name.c_str(),
                      static_cast<long long>(row.calls), row.total_ms, mean_us, 100 * row.total_ms / step);
        os << line;
    }
    os << "(exclusive times: a row excludes the rows nested in it; a forward op is charged the time since the "
          "previous op or scope edge)\n";
    return os.str();
}

Session::Session(bool on, const Options& options) : on_(on), trace_path_(options.trace_path) {
    if (on_) start(options);
}

Session::~Session() {
    if (on_) stop();
}

std::string Session::finish(const std::string& table_path) {
    if (!on_) return "";
    stop();
    on_ = false;
    std::string text = format_report(report());
    if (!table_path.empty()) {
        std::ofstream f(table_path, std::ios::trunc);
        f << text;
        SSL_CHECK_T(IoError, f.good(), "profiler: cannot write ", table_path);
        text += "profile table: " + table_path + "\n";
    }
    if (!trace_path_.empty()) text += "Chrome trace: " + trace_path_ + " (chrome://tracing or ui.perfetto.dev)\n";
    return text;
}

}  // namespace sslight::profiler
