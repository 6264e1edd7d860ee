// Shared by the op files: dtype/device dispatch to a kernel family's CPU functions (float, double) or GPU
// launchers (float, bf16). A CUDA tensor never falls back to a CPU kernel; an unsupported dtype is a
// DTypeError naming the op; a CUDA tensor in a CPU-only build is a DeviceError.
#pragma once
#include "engine/tensor.h"

namespace sslight::ops {

// Runs cpu(T{}) with T = float or double, or gpu(T{}, stream) with T = float or bf16, for `t`'s device and
// dtype, followed on the GPU by the sync-debug hook.
template <class Cpu, class Gpu>
void dispatch_float(const char* op, const Tensor& t, Cpu&& cpu, Gpu&& gpu) {
    if (t.device().is_cpu()) {
        if (t.dtype() == DType::f32) return cpu(float{});
        if (t.dtype() == DType::f64) return cpu(double{});
        SSL_CHECK_DTYPE(false, op, ": the CPU kernels take f32 or f64, got ", t.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    if (t.dtype() == DType::f32) gpu(float{}, runtime::stream(t.device()));
    else if (t.dtype() == DType::bf16) gpu(bf16{}, runtime::stream(t.device()));
    else SSL_CHECK_DTYPE(false, op, ": the CUDA kernels take f32 or bf16, got ", t.str());
    runtime::after_op(t.device(), op);
#else
    (void)gpu;
    SSL_CHECK_DEVICE(false, op, ": built without CUDA, cannot run on ", t.str());
#endif
}

// The typed data pointer of a tensor, or nullptr for an undefined one (optional kernel arguments).
template <class T>
T* data_or_null(const Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace sslight::ops
