#!/usr/bin/env bash
# The one-shot GPU check (DESIGN.md §6), run on the GPU machine from the repository root:
#   bash bench/device_check.sh            (after bench/prepare_device_carry.sh here; carry .devcarry)
# Configures and builds there (no package registry: doctest/cblas/OpenBLAS come from .devcarry, cuDNN and
# NCCL from PyTorch's nvidia wheels), runs every gpu-labelled test and the benchmarks, and prints a
# compact summary last. Logs are written to ./device_out and, at the end, bundled for $OUT (the device tool
# returns at most 8 files): $OUT/device_check.log (everything printed) and $OUT/device_logs.tgz (all logs).
# PHASES (default "build tests bench train_step") selects what runs, so a run can be split across calls
# that each fit the device tool's 10-minute command limit; BENCH_TIMEOUT_S caps each benchmark (default 25).
set -uo pipefail
cd "$(dirname "$0")/.."
out=device_out
mkdir -p "$out"
log="$out/device_check.log"
exec > >(tee "$log") 2>&1
phases=" ${PHASES:-build tests bench train_step} "
want() { [[ "$phases" == *" $1 "* ]]; }
bundle() {
    if [[ -n "${OUT:-}" ]]; then
        tar czf "$OUT/device_logs.tgz" -C "$out" . 2>/dev/null
        cp "$log" "$OUT/device_check.log" 2>/dev/null
    fi
}
trap bundle EXIT
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

stamp "host: $(hostname), $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
py=$(command -v python3)
site=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
cudnn_root="$site/nvidia/cudnn"
nccl_root="$site/nvidia/nccl"
[[ -d "$cudnn_root" ]] || cudnn_root=""
[[ -d "$nccl_root" ]] || nccl_root=""
stamp "cuDNN from: ${cudnn_root:-toolkit}; NCCL from: ${nccl_root:-toolkit}"
export LD_LIBRARY_PATH="$PWD/.devcarry/lib:${cudnn_root:+$cudnn_root/lib:}${nccl_root:+$nccl_root/lib:}${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"

build=build-gpu
gpu_rc=0
if want build; then
stamp "configure"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSSLIGHT_DEPS_PREFIX="$PWD/.devcarry" \
    -DSSLIGHT_CUDNN_ROOT="$cudnn_root" -DSSLIGHT_NCCL_ROOT="$nccl_root" -DSSLIGHT_EMU=OFF \
    -DSSLIGHT_PARITY_PYTHON="$py" > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
grep "^-- sslight" "$out/configure.log"
stamp "build"
if ! cmake --build "$build" -j"$(nproc)" > "$out/build.log" 2>&1; then
    grep -E "error|FAILED" "$out/build.log" | head -30
    stamp "BUILD FAILED"
    exit 1
fi
fi
if want tests; then
    stamp "gpu tests"
    ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300 > "$out/ctest_gpu.log" 2>&1
    gpu_rc=$?
fi
if want bench; then
stamp "benchmarks"
for b in "$build"/bench/bench_*; do
    [[ -x "$b" ]] || continue
    [[ "$(basename "$b")" == bench_train_step ]] && continue  # run below, side by side with PyTorch
    echo "== $(basename "$b")"
    timeout "${BENCH_TIMEOUT_S:-25}" "$b" 2>&1 | tee "$out/$(basename "$b").txt" | tail -40
done
fi
# Training step (issue 9): the six SPEC rows, batch 128, sslight vs the same step in PyTorch (eager f32, eager
# channels_last + bf16 autocast) on this GPU, then torch.compile on one row (compiling all six would not fit the
# budget). At most 150 + 60 s. TRAIN_STEP=0 skips it; TRAIN_STEP_STEPS, TRAIN_STEP_COMPILE_ROW override.
ts_log="$out/train_step.txt"
if want train_step && [[ "${TRAIN_STEP:-1}" == 1 ]]; then
    stamp "training step vs PyTorch"
    ts_args=(--device cuda --batch 128 --steps "${TRAIN_STEP_STEPS:-5}" --warmup 2 --timeout 60
             --sslight "$build/bench/bench_train_step")
    PYTHONUNBUFFERED=1 timeout 150 "$py" bench/train_step_torch.py "${ts_args[@]}" --modes f32,bf16 2>&1 |
        tee "$ts_log"
    read -r ts_method ts_model <<< "${TRAIN_STEP_COMPILE_ROW:-dino resnet18}"
    PYTHONUNBUFFERED=1 timeout 60 "$py" bench/train_step_torch.py "${ts_args[@]}" --modes compile \
        --method "$ts_method" --model "$ts_model" 2>&1 | tee -a "$ts_log"
fi
stamp "summary"
echo "================ device_check summary ================"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1
[[ -f "$out/ctest_gpu.log" ]] && grep -E "tests passed|tests failed|Failed|Not Run|\*\*\*" "$out/ctest_gpu.log" | tail -20
[[ -f "$ts_log" ]] && { grep "^train-step " "$ts_log" || echo "train-step: no result (see $ts_log)"; }
echo "gpu ctest exit code: $gpu_rc; total $(($(date +%s) - t0)) s; logs in $out/"
exit $gpu_rc
