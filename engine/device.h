// Devices (cpu, cuda:N) and the runtime every op dispatches through: device detection that treats any
// CUDA error as "no GPU", one compute stream per device, the stream-ordered allocator with live/peak byte
// counters, host<->device copies and the cuBLAS handle. Without CUDA support the cuda functions report
// zero devices and refuse to allocate.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common.h"

namespace sslight {

struct Device {
    enum class Kind : uint8_t { CPU, CUDA };
    Kind kind = Kind::CPU;
    int index = 0;

    static Device cpu() { return {}; }
    static Device cuda(int i = 0) { return {Kind::CUDA, i}; }
    // "cpu", "cuda", "cuda:N"; throws ConfigError naming the text otherwise.
    static Device parse(const std::string& text);
    bool is_cpu() const { return kind == Kind::CPU; }
    bool is_cuda() const { return kind == Kind::CUDA; }
    std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
    bool operator==(const Device& o) const { return kind == o.kind && (is_cpu() || index == o.index); }
    bool operator!=(const Device& o) const { return !(*this == o); }
};

namespace runtime {

bool cuda_built();                   // compiled with SSLIGHT_WITH_CUDA
int cuda_device_count();             // 0 when there is no usable GPU, whatever the reason
std::string cuda_unavailable_reason();  // why the count is 0 ("" when a GPU is usable)
Device default_device();             // cuda:0 when available, else cpu

kernels::Stream stream(Device d);    // the compute stream of a CUDA device (nullptr for cpu)
void synchronize(Device d);
bool sync_debug();                   // SSLIGHT_SYNC_DEBUG=1: synchronise after every op
void after_op(Device d, const char* op);  // the sync-debug hook ops call after launching

void* allocate(Device d, size_t bytes);  // 64-byte aligned on cpu; stream-ordered pool on cuda
void deallocate(Device d, void* p, size_t bytes);
struct MemStats {
    size_t live = 0, peak = 0, allocations = 0;
};
MemStats mem_stats(Device d);
void reset_peak(Device d);

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void fill_zero(void* dst, Device d, size_t bytes);

void* cublas_handle(Device d);       // cublasHandle_t bound to the device's stream

}  // namespace runtime
}  // namespace sslight
