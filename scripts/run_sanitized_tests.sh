#!/usr/bin/env bash
# The sanitized pass of CI (.ci/run runs it after scripts/run_tests.sh): the cpu, emu and mpi suites under
# AddressSanitizer + UndefinedBehaviorSanitizer in ${SSLIGHT_ASAN_BUILD_DIR:-build-asan} (the default compiler,
# SSLIGHT_SANITIZE=ON, CUDA off: the CUDA kernels run under the SIMT emulator, whose fiber switches are annotated for
# ASan), then every libFuzzer target for SSLIGHT_FUZZ_SECONDS (label fuzz) in ${SSLIGHT_FUZZ_BUILD_DIR:-build-fuzz}
# (clang, SSLIGHT_FUZZ=ON; only the fuzz targets are built there: the tests use C++20 lambda captures of structured
# bindings that g++ accepts in C++17 and clang 14 does not). Any ASan or UBSan report fails the test that hit it
# (halt_on_error); leaks fail the cpu and emu tests, not the mpi ones (see below). Third-party findings only are
# suppressed: tests/sanitizers/{lsan,ubsan}.supp. Nothing is excluded from the three suites.
# Time budget: CI (both passes) must stay under 30 min on the 2-core CI machine with a warm ccache, under 60 cold.
# Measured on a fresh copy of the tree (2026-11-29): warm, .ci/run 9 min 07 s (normal pass 247 s; this pass 300 s:
# build 61, cpu/emu/mpi 188, fuzz build + runs 51); this pass cold 24 min (build 13 min, fuzz tree 4 min).
#  - ccache hits across fresh clones: CCACHE_BASEDIR makes paths relative to the checkout and CCACHE_NOHASHDIR keeps
#    the build folder out of the hash of -g compilations (debug info then names the build folder of the clone that
#    first compiled a file; sanitizer stacks still give file:line).
#  - -O1 (SSLIGHT_ASAN_OPT): with a warm cache compile time hardly matters, and the tests run several times faster
#    than at -O0.
# Usage: scripts/run_sanitized_tests.sh [ctest args...]    e.g. -R data
#   SSLIGHT_FUZZ_SECONDS=N  seconds per fuzz target (default 10; 0 skips the fuzz pass and its build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${SSLIGHT_ASAN_BUILD_DIR:-build-asan}
fuzz_build=${SSLIGHT_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${SSLIGHT_JOBS:-$(nproc)}
fuzz_seconds=${SSLIGHT_FUZZ_SECONDS:-10}
opt=${SSLIGHT_ASAN_OPT:--O1}
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG"
       "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG" -DSSLIGHT_SANITIZE=ON -DSSLIGHT_CUDA=OFF
       -DSSLIGHT_BUILD_BENCH=OFF)
configure() {  # build dir, extra cmake arguments
    local dir=$1
    shift
    cmake -S . -B "$dir" -G Ninja "${flags[@]}" "$@" >"$dir.configure.log" 2>&1 || {
        cat "$dir.configure.log" >&2
        exit 1
    }
}
start=$(date +%s)
configure "$build"
ninja -C "$build" -j"$jobs"
built=$(date +%s)
# Every ASan or UBSan report aborts the process that hit it (a non-zero exit fails the test).
asan="halt_on_error=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$root/tests/sanitizers/ubsan.supp"
status=0
# cpu and emu: leaks are errors too (third-party ones suppressed in tests/sanitizers/lsan.supp).
ASAN_OPTIONS="$asan:detect_leaks=1" ctest --test-dir "$build" -L 'cpu|emu' --output-on-failure -j"$jobs" \
    --timeout 900 "$@" || status=$?
# mpi: leak detection off. Open MPI dlopens its MCA components and unloads them in MPI_Finalize, so the
# start-up allocations it never frees are reported from "<unknown module>" and no suppression can name them.
# One test at a time: each runs 2-3 ranks that spin while they wait, so two at once on 2 cores ran several times
# slower, dist_methods.mpi2 and dist_pretrain.mpi2 past their 120 / 180 s limits; alone they take 29 s and 54 s here.
ASAN_OPTIONS="$asan:detect_leaks=0" ctest --test-dir "$build" -L mpi --output-on-failure -j1 --timeout 900 "$@" ||
    status=$?
tested=$(date +%s)
# fuzz: each target from its generated seeds (its ctest sets the sanitizer options).
if ((fuzz_seconds > 0)); then
    for tool in clang clang++; do
        command -v $tool >/dev/null || {
            echo "run_sanitized_tests: $tool not found: scripts/install_deps.sh --test installs it" >&2
            exit 1
        }
    done
    configure "$fuzz_build" -DSSLIGHT_FUZZ=ON -DSSLIGHT_EMU=OFF -DSSLIGHT_FUZZ_SECONDS="$fuzz_seconds" \
        -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
    ninja -C "$fuzz_build" -j"$jobs" fuzz_targets
    ctest --test-dir "$fuzz_build" -L fuzz --output-on-failure -j"$jobs" "$@" || status=$?
fi
end=$(date +%s)
echo "run_sanitized_tests: build $((built - start)) s, cpu/emu/mpi tests $((tested - built)) s," \
    "fuzz build + runs $((end - tested)) s, total $((end - start)) s"
exit $status
