#!/usr/bin/env bash
# The cpu, emu and mpi suites under AddressSanitizer + UndefinedBehaviorSanitizer (SSLIGHT_SANITIZE=ON, CUDA off:
# the kernels run under the SIMT emulator, whose fiber switches are annotated for ASan). Configures and builds
# ${SSLIGHT_ASAN_BUILD_DIR:-build-asan}, then runs ctest -L 'cpu|emu|mpi'. Any ASan or UBSan report fails the
# test that hit it (halt_on_error); leaks fail the cpu and emu tests, not the mpi ones (see below). Third-party
# findings only are suppressed: tests/sanitizers/{lsan,ubsan}.supp.
# Extra arguments go to ctest (e.g. -R data). Usage: scripts/run_sanitized_tests.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${SSLIGHT_ASAN_BUILD_DIR:-build-asan}
jobs=${SSLIGHT_JOBS:-$(nproc)}
start=$(date +%s)
# -O0 -g1 (line tables: stacks with file:line): the build dominates this script's time, and -O0 compiles several
# times faster than -O1 under the sanitizers; the tests are small enough that running them unoptimised is cheap.
# SSLIGHT_ASAN_OPT=-O1 for a slower build with faster tests.
opt=${SSLIGHT_ASAN_OPT:--O0}
cmake -S . -B "$build" -G Ninja -DSSLIGHT_SANITIZE=ON -DSSLIGHT_CUDA=OFF -DSSLIGHT_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$opt -g1 -DNDEBUG" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$opt -g1 -DNDEBUG" >/dev/null
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
ASAN_OPTIONS="$asan:detect_leaks=0" ctest --test-dir "$build" -L mpi --output-on-failure -j"$jobs" --timeout 900 \
    "$@" || status=$?
end=$(date +%s)
echo "run_sanitized_tests: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s"
exit $status
