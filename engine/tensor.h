// Tensor: dtype, device, shape and a refcounted contiguous storage (row-major; images NHWC, tokens
// [B, T, C]). Views are reshape and slicing along dim 0; both are differentiable. Transfers are explicit
// (to(Device)); to(DType) casts. Autograd state (requires_grad, grad, grad_fn) lives in the impl; see
// engine/autograd.h for the tape.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/device.h"
#include "engine/dtype.h"

namespace sslight {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

struct Node;

// Owns device or host memory; freed through the runtime allocator when the last reference goes.
struct Storage {
    void* data = nullptr;
    size_t bytes = 0;
    Device device;
    Storage(Device d, size_t nbytes);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
};

struct TensorImpl {
    std::shared_ptr<Storage> storage;
    size_t offset = 0;  // bytes from storage->data
    Shape shape;
    DType dtype = DType::f32;
    Device device;
    // autograd
    bool requires_grad = false;
    std::shared_ptr<Node> grad_fn;  // the node that produced this tensor (null for leaves)
    int output_nr = 0;              // which output of grad_fn
    std::shared_ptr<TensorImpl> grad;
    std::weak_ptr<Node> grad_accumulator;  // leaves only: the node that accumulates into grad
    std::string name;                      // optional, used in messages
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const { return shape_numel(impl().shape); }
    DType dtype() const { return impl().dtype; }
    Device device() const { return impl().device; }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
    std::string str() const;  // "Tensor(shape=[2, 3], dtype=f32, device=cpu)"

    void* raw_data() const;
    template <class T>
    T* data() const {
        SSL_CHECK_DTYPE(dtype_of<T>::value == dtype(), "data<", dtype_name(dtype_of<T>::value), ">() on ", str());
        return static_cast<T*>(raw_data());
    }

    // Views sharing storage (differentiable). reshape accepts one -1.
    Tensor reshape(Shape shape) const;
    Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) along dim 0
    Tensor flatten() const { return reshape({numel()}); }

    // Copies (differentiable).
    Tensor to(Device d) const;
    Tensor to(DType t) const;
    Tensor clone() const;

    // Autograd.
    bool requires_grad() const { return impl().requires_grad; }
    Tensor& requires_grad_(bool on = true);
    Tensor detach() const;  // shares storage, no history
    Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
    void set_grad(const Tensor& g);
    void zero_grad() { impl().grad.reset(); }
    const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    // Backpropagates from this tensor. Without `grad` the tensor must hold one element (the seed is 1).
    void backward(const Tensor& grad = Tensor()) const;

    // Host access helpers (copy to the CPU when needed).
    template <class T>
    std::vector<T> to_vector() const;
    double item() const;  // one-element tensor of any dtype

    Tensor& set_name(std::string n) {
        impl().name = std::move(n);
        return *this;
    }
    const std::string& name() const { return impl().name; }

    TensorImpl& impl() const {
        SSL_CHECK(impl_ != nullptr, "use of an undefined tensor");
        return *impl_;
    }
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same(const Tensor& o) const { return impl_ == o.impl_; }

private:
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);  // header plus up to 16 values

// Factories.
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
Tensor zeros_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
// From host values: values.size() must equal the shape's element count.
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
Tensor scalar_tensor(double value, DType dtype = DType::f32, Device device = Device::cpu());

// Validation helpers for op boundaries: each throws a typed error naming the op and both tensors.
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
void check_float(const char* op, const Tensor& a);
void check_defined(const char* op, const Tensor& a, const char* what);

}  // namespace sslight
