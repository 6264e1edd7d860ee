// Learning-rate, weight-decay and temperature schedules, numerically as numpy computes DINO's
// utils.cosine_scheduler and the teacher temperature table (same operation order, double precision).
#include "engine/optim/schedule.h"

#include <cmath>

#include "engine/check.h"

namespace sslight::optim {

std::vector<double> linspace(double start, double stop, int64_t num) {
    SSL_CHECK_T(ConfigError, num >= 0, "linspace: num must be >= 0, got ", num);
    std::vector<double> out(static_cast<size_t>(num));
    if (num == 0) return out;
    const double div = static_cast<double>(num - 1), delta = stop - start;
    const double step = num > 1 ? delta / div : 0.0;
    for (int64_t i = 0; i < num; ++i) {
        const double y = static_cast<double>(i);
        out[static_cast<size_t>(i)] = (step == 0 && num > 1 ? y / div * delta : y * step) + start;
    }
    if (num > 1) out.back() = stop;
    return out;
}

std::vector<double> cosine_schedule(double base, double final, int epochs, int64_t iters_per_epoch,
                                    int warmup_epochs, double start_warmup) {
    SSL_CHECK_T(ConfigError, epochs > 0, "cosine_schedule: epochs must be > 0, got ", epochs);
    SSL_CHECK_T(ConfigError, iters_per_epoch > 0, "cosine_schedule: iters_per_epoch must be > 0, got ",
                iters_per_epoch);
    SSL_CHECK_T(ConfigError, warmup_epochs >= 0 && warmup_epochs <= epochs, "cosine_schedule: warmup_epochs ",
                warmup_epochs, " must be in [0, epochs = ", epochs, "]");
    const int64_t warmup_iters = static_cast<int64_t>(warmup_epochs) * iters_per_epoch;
    const int64_t total = static_cast<int64_t>(epochs) * iters_per_epoch, n = total - warmup_iters;
    std::vector<double> out = linspace(start_warmup, base, warmup_iters);
    out.reserve(static_cast<size_t>(total));
    const double half = 0.5 * (base - final), pi = 3.141592653589793;
    for (int64_t i = 0; i < n; ++i)
        out.push_back(final + half * (1 + std::cos(pi * static_cast<double>(i) / static_cast<double>(n))));
    return out;
}

std::vector<double> constant_schedule(double value, int64_t n) {
    SSL_CHECK_T(ConfigError, n >= 0, "constant_schedule: length must be >= 0, got ", n);
    return std::vector<double>(static_cast<size_t>(n), value);
}

std::vector<double> teacher_temp_schedule(double warmup_temp, double temp, int warmup_epochs, int epochs) {
    SSL_CHECK_T(ConfigError, epochs > 0, "teacher_temp_schedule: epochs must be > 0, got ", epochs);
    SSL_CHECK_T(ConfigError, warmup_epochs >= 0 && warmup_epochs <= epochs, "teacher_temp_schedule: warmup_epochs ",
                warmup_epochs, " must be in [0, epochs = ", epochs, "]");
    std::vector<double> out = linspace(warmup_temp, temp, warmup_epochs);
    out.resize(static_cast<size_t>(epochs), temp);
    return out;
}

double linear_scaled_lr(double base_per_256, int64_t global_batch) {
    SSL_CHECK_T(ConfigError, global_batch > 0, "linear_scaled_lr: global batch must be > 0, got ", global_batch);
    return base_per_256 * static_cast<double>(global_batch) / 256.0;
}

}  // namespace sslight::optim
