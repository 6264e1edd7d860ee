// Per-iteration schedules of the SSL recipes (SPEC.md §5), as DINO's utils.py builds them: linear warmup
// (numpy linspace, both ends included) then a half-cosine from base to final; DINO's teacher temperature
// table (per epoch); the linear scaling rule lr = base · batch / 256. Invalid arguments throw ConfigError
// naming the values. No tensors, no gradients.
#pragma once
#include <cstdint>
#include <vector>

namespace sslight::optim {

// epochs · iters_per_epoch values: linspace(start_warmup, base, W) for the W = warmup_epochs · iters_per_epoch
// warmup iterations, then final + 0.5·(base − final)·(1 + cos(π·i/N)) for i in [0, N), N = epochs·iters − W.
std::vector<double> cosine_schedule(double base, double final, int epochs, int64_t iters_per_epoch,
                                    int warmup_epochs = 0, double start_warmup = 0);
std::vector<double> constant_schedule(double value, int64_t n);
// One value per epoch: linspace(warmup_temp, temp, warmup_epochs), then temp for the remaining epochs.
std::vector<double> teacher_temp_schedule(double warmup_temp, double temp, int warmup_epochs, int epochs);
// base_per_256 · global_batch / 256 (the peak learning rate of SPEC.md §5).
double linear_scaled_lr(double base_per_256, int64_t global_batch);

// numpy.linspace(start, stop, num) with endpoint=True, bit for bit: start + i·((stop − start)/(num − 1)), the
// last value exactly stop.
std::vector<double> linspace(double start, double stop, int64_t num);

}  // namespace sslight::optim
