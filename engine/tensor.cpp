// Tensor storage, factories, host access, printing and the validation helpers used at op boundaries.
// The differentiable view/copy methods (reshape, slice, to, clone) live in engine/ops/view.cpp.
#include "engine/tensor.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "engine/autograd.h"
#include "kernels/basic.h"

namespace sslight {

std::string shape_str(const Shape& s) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    os << "]";
    return os.str();
}

int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

Storage::Storage(Device d, size_t nbytes) : bytes(nbytes), device(d) { data = runtime::allocate(d, nbytes); }
Storage::~Storage() { runtime::deallocate(device, data, bytes); }

int64_t Tensor::size(int64_t d) const {
    const int64_t n = dim();
    SSL_CHECK_SHAPE(d >= -n && d < n, "dimension ", d, " out of range for ", str());
    return impl().shape[d < 0 ? d + n : d];
}

std::string Tensor::str() const {
    if (!defined()) return "Tensor(undefined)";
    return sslight::str("Tensor(shape=", shape_str(shape()), ", dtype=", dtype_name(dtype()),
                        ", device=", device().str(), impl().name.empty() ? "" : ", name=", impl().name, ")");
}

void* Tensor::raw_data() const {
    TensorImpl& t = impl();
    return static_cast<char*>(t.storage->data) + t.offset;
}

Tensor& Tensor::requires_grad_(bool on) {
    SSL_CHECK_T(AutogradError, is_leaf() || on, "requires_grad_(false) on a non-leaf tensor ", str());
    SSL_CHECK_T(AutogradError, !on || is_floating(dtype()), "only floating tensors can require grad: ", str());
    impl().requires_grad = on;
    return *this;
}

Tensor Tensor::detach() const {
    auto p = std::make_shared<TensorImpl>();
    p->storage = impl().storage;
    p->offset = impl().offset;
    p->shape = impl().shape;
    p->dtype = impl().dtype;
    p->device = impl().device;
    p->name = impl().name;
    return Tensor(p);
}

void Tensor::set_grad(const Tensor& g) {
    if (g.defined()) {
        check_same_shape("set_grad", *this, g);
        check_same_device("set_grad", *this, g);
    }
    impl().grad = g.impl_ptr();
}

void Tensor::backward(const Tensor& grad) const {
    if (grad.defined()) {
        run_backward(*this, grad);
        return;
    }
    SSL_CHECK_T(AutogradError, numel() == 1,
                "backward() without a gradient needs a one-element tensor, got ", str());
    run_backward(*this, ones(shape(), dtype(), device()));
}

template <class T>
std::vector<T> Tensor::to_vector() const {
    Tensor c = device().is_cpu() ? *this : to(Device::cpu());
    if (c.dtype() != dtype_of<T>::value) c = c.to(dtype_of<T>::value);
    const T* p = c.data<T>();
    return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item() const {
    SSL_CHECK_SHAPE(numel() == 1, "item() needs a one-element tensor, got ", str());
    NoGradGuard ng;
    return to_vector<double>()[0];
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
    os << t.str();
    if (!t.defined() || t.numel() == 0) return os;
    NoGradGuard ng;
    std::vector<double> v = t.detach().to_vector<double>();
    os << " {";
    const size_t shown = v.size() < 16 ? v.size() : 16;
    for (size_t i = 0; i < shown; ++i) os << (i ? ", " : "") << std::setprecision(6) << v[i];
    if (shown < v.size()) os << ", ... (" << v.size() << " values)";
    return os << "}";
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
    for (int64_t d : shape) SSL_CHECK_SHAPE(d >= 0, "negative dimension in shape ", shape_str(shape));
    auto p = std::make_shared<TensorImpl>();
    p->shape = shape;
    p->dtype = dtype;
    p->device = device;
    p->storage = std::make_shared<Storage>(device, static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
    return Tensor(p);
}

Tensor zeros(const Shape& shape, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    runtime::fill_zero(t.raw_data(), device, t.nbytes());
    return t;
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    const int64_t n = t.numel();
    if (device.is_cpu()) {
        switch (dtype) {
            case DType::f32: kernels::fill_cpu(t.data<float>(), n, value); break;
            case DType::f64: kernels::fill_cpu(t.data<double>(), n, value); break;
            case DType::bf16: kernels::fill_cpu(t.data<bf16>(), n, value); break;
            case DType::i32: kernels::fill_cpu(t.data<int32_t>(), n, value); break;
            case DType::i64: kernels::fill_cpu(t.data<int64_t>(), n, value); break;
            case DType::u8: kernels::fill_cpu(t.data<uint8_t>(), n, value); break;
        }
        return t;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(device);
    switch (dtype) {
        case DType::f32: kernels::cuda::fill(t.data<float>(), n, value, s); break;
        case DType::f64: kernels::cuda::fill(t.data<double>(), n, value, s); break;
        case DType::bf16: kernels::cuda::fill(t.data<bf16>(), n, value, s); break;
        case DType::i32: kernels::cuda::fill(t.data<int32_t>(), n, value, s); break;
        case DType::i64: kernels::cuda::fill(t.data<int64_t>(), n, value, s); break;
        case DType::u8: kernels::cuda::fill(t.data<uint8_t>(), n, value, s); break;
    }
    runtime::after_op(device, "full");
#endif
    return t;
}

Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
    SSL_CHECK_SHAPE(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                    " values for shape ", shape_str(shape));
    Tensor t = empty(shape, dtype_of<T>::value, device);
    runtime::copy(t.raw_data(), device, values.data(), Device::cpu(), t.nbytes());
    return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector<bf16>(const std::vector<bf16>&, const Shape&, Device);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
    SSL_CHECK_DEVICE(a.device() == b.device(), op, ": tensors on different devices: ", a.str(), " and ", b.str(),
                     " (move one with .to(device))");
}
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
    SSL_CHECK_DTYPE(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.str(), " and ", b.str());
}
void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
    SSL_CHECK_SHAPE(a.shape() == b.shape(), op, ": shape mismatch: ", shape_str(a.shape()), " vs ",
                    shape_str(b.shape()));
}
void check_float(const char* op, const Tensor& a) {
    SSL_CHECK_DTYPE(is_floating(a.dtype()), op, ": expected a floating tensor (f32, f64, bf16), got ", a.str());
}
void check_defined(const char* op, const Tensor& a, const char* what) {
    SSL_CHECK(a.defined(), op, ": ", what, " is an undefined tensor");
}

}  // namespace sslight
