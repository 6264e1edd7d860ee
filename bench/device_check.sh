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
sb_dir="$out/sslight_bench"
# One summary line from a `sslight bench --json` file.
sslight_bench_line() {
    "$py" - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["phases_ms"]
print("sslight-bench {} {} {} batch {}: {:.1f} samples/s, step {:.1f} ms (data {:.1f}, fwd {:.1f}, bwd {:.1f}, "
      "optim {:.1f}, method {:.1f}), peak {:.0f} MiB".format(
          d["method"], d["model"], d["dtype"], d["batch"], d["samples_per_s"], d["step_ms"], p["data"],
          p["forward"], p["backward"], p["optimizer"], p["method_update"], d["memory_mib"]["device_peak"]))
PY
}
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
# The SSL loss rows against PyTorch on this GPU (issue 6; bench/ssl_losses_torch.py re-runs bench_ssl_losses
# --gpu-only itself). At most 60 s; SSL_LOSSES_TORCH=0 skips it.
if [[ "${SSL_LOSSES_TORCH:-1}" == 1 ]]; then
    stamp "SSL losses vs PyTorch"
    PYTHONUNBUFFERED=1 timeout 60 "$py" bench/ssl_losses_torch.py --device cuda \
        --bin "$build/bench/bench_ssl_losses" 2>&1 | tee "$out/ssl_losses_torch.txt"
fi
# `sslight bench` (issue 9, apps/bench_cmd.h): the six SPEC rows through the binary itself (pretrain's setup from the
# row's config, synthetic views through the loader's device path), batch 128, f32 (--dtype bf16 is refused until the
# engine has mixed precision), SSLIGHT_BENCH_STEPS (default 10) after 2 warm-up, one JSON per row. At most
# SSLIGHT_BENCH_BUDGET_S (default 120) in all, 40 s per row; SSLIGHT_BENCH=0 skips it.
if [[ "${SSLIGHT_BENCH:-1}" == 1 ]]; then
    stamp "sslight bench: the six SPEC rows"
    mkdir -p "$sb_dir"
    sb_t0=$(date +%s)
    for row in "dino resnet18" "dino resnet34" "dino mobilenet_v2" "dino vit_tiny" "swav mobilenet_v2" \
               "moco mobilenet_v2"; do
        read -r sb_m sb_b <<< "$row"
        sb_left=$(( ${SSLIGHT_BENCH_BUDGET_S:-120} - ($(date +%s) - sb_t0) ))
        if (( sb_left < 15 )); then
            echo "sslight-bench $sb_m $sb_b: skipped (budget spent)" >> "$sb_dir/summary.txt"
            continue
        fi
        sb_json="$sb_dir/${sb_m}_${sb_b}.json"
        timeout $(( sb_left < 40 ? sb_left : 40 )) "$build/apps/sslight" bench --method "$sb_m" --model "$sb_b" \
            --device cuda:0 --batch 128 --steps "${SSLIGHT_BENCH_STEPS:-10}" --warmup 2 --json "$sb_json" \
            > "$sb_dir/${sb_m}_${sb_b}.txt" 2>&1
        sb_rc=$?
        tail -14 "$sb_dir/${sb_m}_${sb_b}.txt"
        if [[ $sb_rc == 0 && -f "$sb_json" ]]; then
            sslight_bench_line "$sb_json" >> "$sb_dir/summary.txt"
        else
            echo "sslight-bench $sb_m $sb_b: failed, exit code $sb_rc (see $sb_dir/${sb_m}_${sb_b}.txt)" \
                >> "$sb_dir/summary.txt"
        fi
    done
fi
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
[[ -f "$sb_dir/summary.txt" ]] && cat "$sb_dir/summary.txt"
[[ -f "$out/ssl_losses_torch.txt" ]] && grep -E "^gpu |^#" "$out/ssl_losses_torch.txt"
echo "gpu ctest exit code: $gpu_rc; total $(($(date +%s) - t0)) s; logs in $out/"
exit $gpu_rc
