// CPU implementation (and reference) of the fused EMA update (math in kernels/ema.h): one OpenMP loop over
// every (tensor, chunk) work item of the list, t = m·t + (1 − m)·s in double.
#include <vector>

#include "kernels/ema.h"

namespace sslight::kernels {

template <class T>
void ema_update_cpu(const std::vector<EmaSlot<T>>& slots, double m) {
    struct Item {
        size_t slot;
        int64_t begin, end;
    };
    std::vector<Item> items;
    int64_t total = 0;
    for (size_t t = 0; t < slots.size(); ++t) {
        for (int64_t c = 0; c < slots[t].numel; c += kEmaChunk)
            items.push_back({t, c, c + kEmaChunk < slots[t].numel ? c + kEmaChunk : slots[t].numel});
        total += slots[t].numel;
    }
    const double omm = 1.0 - m;
#pragma omp parallel for schedule(static) if (total > (1 << 16))
    for (int64_t w = 0; w < int64_t(items.size()); ++w) {
        const Item& it = items[size_t(w)];
        T* t = slots[it.slot].teacher;
        const T* s = slots[it.slot].student;
        for (int64_t i = it.begin; i < it.end; ++i) t[i] = T(double(t[i]) * m + omm * double(s[i]));
    }
}

template void ema_update_cpu<float>(const std::vector<EmaSlot<float>>&, double);
template void ema_update_cpu<double>(const std::vector<EmaSlot<double>>&, double);

}  // namespace sslight::kernels
