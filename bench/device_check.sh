#!/usr/bin/env bash
# The one-shot GPU check (DESIGN.md §6), run on the GPU machine from the repository root:
#   bash bench/device_check.sh            (after bench/prepare_device_carry.sh here; carry .devcarry)
# Configures and builds there (no package registry: doctest/cblas/OpenBLAS come from .devcarry, cuDNN and
# NCCL from PyTorch's nvidia wheels), runs every gpu-labelled test and the benchmarks, and prints a
# compact summary last. Full logs go to $OUT (or ./device_out) for committing under bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device_out}"
mkdir -p "$out"
log="$out/device_check.log"
exec > >(tee "$log") 2>&1
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
stamp "gpu tests"
ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300 > "$out/ctest_gpu.log" 2>&1
gpu_rc=$?
stamp "benchmarks"
for b in "$build"/bench/bench_*; do
    [[ -x "$b" ]] || continue
    [[ "$(basename "$b")" == bench_train_step ]] && continue  # run below, side by side with PyTorch
    echo "== $(basename "$b")"
    timeout 120 "$b" 2>&1 | tee "$out/$(basename "$b").txt" | tail -40
done
# Training step (issue 9): the six SPEC rows, batch 128, sslight vs the same step in PyTorch (eager f32, eager
# channels_last + bf16 autocast) on this GPU, then torch.compile on one row (compiling all six would not fit the
# budget). At most 240 + 120 s. TRAIN_STEP=0 skips it; TRAIN_STEP_STEPS, TRAIN_STEP_COMPILE_ROW override.
ts_log="$out/train_step.txt"
if [[ "${TRAIN_STEP:-1}" == 1 ]]; then
    stamp "training step vs PyTorch"
    ts_args=(--device cuda --batch 128 --steps "${TRAIN_STEP_STEPS:-5}" --warmup 2 --timeout 60
             --sslight "$build/bench/bench_train_step")
    PYTHONUNBUFFERED=1 timeout 240 "$py" bench/train_step_torch.py "${ts_args[@]}" --modes f32,bf16 2>&1 |
        tee "$ts_log"
    read -r ts_method ts_model <<< "${TRAIN_STEP_COMPILE_ROW:-dino resnet18}"
    PYTHONUNBUFFERED=1 timeout 120 "$py" bench/train_step_torch.py "${ts_args[@]}" --modes compile \
        --method "$ts_method" --model "$ts_model" 2>&1 | tee -a "$ts_log"
fi
stamp "summary"
echo "================ device_check summary ================"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1
grep -E "tests passed|tests failed|Failed|Not Run|\*\*\*" "$out/ctest_gpu.log" | tail -20
[[ -f "$ts_log" ]] && { grep "^train-step " "$ts_log" || echo "train-step: no result (see $ts_log)"; }
echo "gpu ctest exit code: $gpu_rc; total $(($(date +%s) - t0)) s; logs in $out/"
exit $gpu_rc
