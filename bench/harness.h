// Shared benchmark harness: wall-clock timing with warm-up and median of repeats (the GPU is
// synchronised around each repeat, so GPU work is timed end to end), and an aligned table printer with a
// ratio column against the comparison measured in the same run; --csv switches the format.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/device.h"

namespace sslight::bench {

// Median seconds of `repeats` calls of fn after `warmup` calls; synchronises `dev` around each call.
inline double time_median(const std::function<void()>& fn, Device dev, int warmup = 3, int repeats = 10) {
    for (int i = 0; i < warmup; ++i) fn();
    runtime::synchronize(dev);
    std::vector<double> t;
    for (int i = 0; i < repeats; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        runtime::synchronize(dev);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

struct Row {
    std::string name, shape, unit;
    double us = 0, rate = 0;           // our time and throughput (unit: GB/s or GFLOP/s)
    std::string cmp_name;              // the comparison, measured in the same run
    double cmp_us = 0, cmp_rate = 0;
};

class Table {
public:
    explicit Table(bool csv) : csv_(csv) {}
    void add(Row r) { rows_.push_back(std::move(r)); }
    void print(const std::string& title) const {
        if (csv_) {
            std::printf("op,shape,us,rate,unit,comparison,cmp_us,cmp_rate,ratio\n");
            for (const Row& r : rows_)
                std::printf("%s,%s,%.2f,%.2f,%s,%s,%.2f,%.2f,%.3f\n", r.name.c_str(), r.shape.c_str(), r.us, r.rate,
                            r.unit.c_str(), r.cmp_name.c_str(), r.cmp_us, r.cmp_rate, ratio(r));
            return;
        }
        std::printf("\n%s\n", title.c_str());
        std::printf("%-18s %-22s %10s %12s   %-16s %10s %12s %8s\n", "op", "shape", "us", "rate", "comparison",
                    "cmp us", "cmp rate", "ratio");
        for (const Row& r : rows_)
            std::printf("%-18s %-22s %10.1f %8.1f %-4s %-16s %10.1f %8.1f %-4s %7.2fx\n", r.name.c_str(),
                        r.shape.c_str(), r.us, r.rate, r.unit.c_str(), r.cmp_name.c_str(), r.cmp_us, r.cmp_rate,
                        r.unit.c_str(), ratio(r));
        std::printf("(ratio = comparison time / our time: > 1 means sslight is faster)\n");
    }

private:
    static double ratio(const Row& r) { return r.us > 0 ? r.cmp_us / r.us : 0; }
    bool csv_;
    std::vector<Row> rows_;
};

}  // namespace sslight::bench
