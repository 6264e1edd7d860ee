// Per-op profiler of training steps (`sslight pretrain --profile`): a time table per op (calls, total ms, mean us,
// % of step; wall clock on the CPU, CUDA events on the device's compute stream on the GPU), a Chrome-trace JSON
// (chrome://tracing, Perfetto) and NVTX ranges for Nsight. Hooks sit where every op passes: the autograd tape
// (forward op ends, engine/autograd.cpp record()), each backward node ("<op>_backward") and NoGradGuard blocks.
// Off (the default), each hook costs one branch on a global flag. Times are exclusive (self): a scope's time
// minus the time of the scopes and ops inside it, so the rows of the table add up to the whole step.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"

namespace sslight::profiler {

// forward: an op's forward; backward: a backward node (shown as "<op>_backward"); engine: autograd internals
// (no-grad blocks, gradient sums); phase: a named part of a step (data, forward, backward, ...); step: a step.
enum class Kind : uint8_t { forward, backward, engine, phase, step };

struct Options {
    std::string trace_path;  // the Chrome-trace JSON; empty: no trace
    int trace_steps = 10;    // steps written to the trace (the table covers every step)
    Device device;           // CUDA: times from CUDA events on its compute stream; CPU: wall clock
};

namespace detail {
extern std::atomic<bool> g_on;
void scope_begin(const char* name, Kind kind, const void* key);
void scope_end(const void* key);
void op_end(const char* name);
void step_begin();
void step_end();
void phase(const char* name);
}  // namespace detail

inline bool enabled() { return detail::g_on.load(std::memory_order_relaxed); }

// Starts profiling on the calling thread (hooks on other threads are ignored). Throws Error when already on or
// when the trace file cannot be created. stop() closes the trace (also after an exception; idempotent).
void start(const Options& options);
void stop();

// Step boundaries and phases. Only what runs between step_begin and step_end is timed; phase(name) ends the
// current phase of the step and opens `name`. A step left open (an exception) is discarded by the next
// step_begin or by stop().
inline void step_begin() {
    if (enabled()) detail::step_begin();
}
inline void step_end() {
    if (enabled()) detail::step_end();
}
inline void phase(const char* name) {
    if (enabled()) detail::phase(name);
}

// The end of a forward op (the time since the previous op boundary is charged to it): called by the tape when
// it records a node. Inside an exact op scope (Scope with Kind::forward) it is ignored: the scope is the op.
inline void op_end(const char* name) {
    if (enabled()) detail::op_end(name);
}

// An exact scope: times its lifetime, pushes an NVTX range. `name` must outlive the scope.
class Scope {
public:
    Scope(const char* name, Kind kind) {
        if (enabled()) detail::scope_begin(name, kind, this), open_ = true;
    }
    ~Scope() {
        if (open_) detail::scope_end(this);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

private:
    bool open_ = false;
};

// Blocks keyed by an object's address (NoGradGuard): begin and end may come from a constructor/destructor pair.
inline void block_begin(const char* name, const void* key) {
    if (enabled()) detail::scope_begin(name, Kind::engine, key);
}
inline void block_end(const void* key) {
    if (enabled()) detail::scope_end(key);
}

// One row of the table: exclusive time of everything that carries `name`.
struct Row {
    std::string name;
    Kind kind = Kind::forward;
    int64_t calls = 0;
    double total_ms = 0;
};

struct Report {
    std::vector<Row> ops;     // forward/backward/engine rows and each phase's time outside ops, by total
    std::vector<Row> phases;  // inclusive time of each phase, in first-seen order
    int64_t steps = 0;        // steps in the table
    bool warmup_left_out = false;  // step 1 (allocator and library warm-up) is in the trace, not the table
    double step_ms = 0;       // all steps in the table together
    bool gpu_timed = false;   // CUDA events (else wall clock)
    std::string gpu_error;    // why CUDA-event timing stopped, if it did
    std::string device;
};

Report report();                          // the steps timed since the last start()
std::string format_report(const Report& r);  // the table printed at the end of a run

// Starts profiling when `on` (else does nothing); stops on destruction. finish() formats the report, writes it
// to `table_path` (when not empty), stops, and returns the text.
class Session {
public:
    Session(bool on, const Options& options);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    std::string finish(const std::string& table_path);

private:
    bool on_ = false;
    std::string trace_path_;
};

}  // namespace sslight::profiler

// An exact forward-op scope for an op's entry point: ops that use it are timed from entry to return.
#define SSL_PROFILE_OP(name) ::sslight::profiler::Scope ssl_profile_op_scope_(name, ::sslight::profiler::Kind::forward)
