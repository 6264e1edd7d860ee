// The differentiable view and copy methods of Tensor: reshape and slice (views sharing storage),
// to(Device), to(DType) and clone (copies). Gradients: reshape -> reshape back; slice -> scatter into
// zeros; to -> the inverse transfer or cast; clone -> identity.
#include "engine/autograd.h"
#include "kernels/basic.h"

namespace sslight {
namespace {

Tensor make_view(const Tensor& t, Shape shape, size_t offset) {
    auto p = std::make_shared<TensorImpl>();
    p->storage = t.impl().storage;
    p->offset = offset;
    p->shape = std::move(shape);
    p->dtype = t.dtype();
    p->device = t.device();
    return Tensor(p);
}

struct ReshapeNode : Node {
    Shape in_shape;
    const char* name() const override { return "reshape"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        return {g[0].reshape(in_shape)};
    }
};

struct SliceNode : Node {
    Shape in_shape;
    DType dtype;
    Device device;
    int64_t begin = 0, end = 0;
    const char* name() const override { return "slice"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor out = zeros(in_shape, dtype, device);
        Tensor dst = out.slice(begin, end);
        runtime::copy(dst.raw_data(), device, g[0].raw_data(), device, g[0].nbytes());
        return {out};
    }
};

struct ToDeviceNode : Node {
    Device src;
    const char* name() const override { return "to_device"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        return {g[0].to(src)};
    }
};

struct ToDTypeNode : Node {
    DType src;
    const char* name() const override { return "to_dtype"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        return {g[0].to(src)};
    }
};

struct CloneNode : Node {
    const char* name() const override { return "clone"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override { return {g[0]}; }
};

Tensor copy_to(const Tensor& t, Device d) {
    Tensor out = empty(t.shape(), t.dtype(), d);
    runtime::copy(out.raw_data(), d, t.raw_data(), t.device(), t.nbytes());
    return out;
}

}  // namespace

Tensor Tensor::reshape(Shape shape) const {
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == -1) {
            SSL_CHECK_SHAPE(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
            infer = static_cast<int64_t>(i);
        } else {
            SSL_CHECK_SHAPE(shape[i] >= 0, "reshape: negative dimension in ", shape_str(shape));
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        SSL_CHECK_SHAPE(known > 0 && numel() % known == 0, "reshape: cannot infer -1 in ", shape_str(shape),
                        " for ", numel(), " elements of ", shape_str(this->shape()));
        shape[infer] = numel() / known;
    }
    SSL_CHECK_SHAPE(shape_numel(shape) == numel(), "reshape: ", shape_str(this->shape()), " (", numel(),
                    " elements) cannot become ", shape_str(shape));
    Tensor out = make_view(*this, shape, impl().offset);
    if (needs_record({*this})) {
        auto n = std::make_shared<ReshapeNode>();
        n->in_shape = this->shape();
        record(n, {*this}, {out});
    }
    return out;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
    SSL_CHECK_SHAPE(dim() >= 1, "slice along dim 0 of a 0-d tensor ", str());
    const int64_t rows = shape()[0];
    SSL_CHECK_SHAPE(0 <= begin && begin <= end && end <= rows, "slice [", begin, ", ", end, ") out of range for ",
                    str());
    Shape s = shape();
    s[0] = end - begin;
    const size_t row_bytes = static_cast<size_t>(rows ? numel() / rows : 0) * dtype_size(dtype());
    Tensor out = make_view(*this, s, impl().offset + static_cast<size_t>(begin) * row_bytes);
    if (needs_record({*this})) {
        auto n = std::make_shared<SliceNode>();
        n->in_shape = shape();
        n->dtype = dtype();
        n->device = device();
        n->begin = begin;
        n->end = end;
        record(n, {*this}, {out});
    }
    return out;
}

Tensor Tensor::to(Device d) const {
    if (d == device()) return *this;
    Tensor out = copy_to(*this, d);
    if (needs_record({*this})) {
        auto n = std::make_shared<ToDeviceNode>();
        n->src = device();
        record(n, {*this}, {out});
    }
    return out;
}

Tensor Tensor::to(DType t) const {
    if (t == dtype()) return *this;
    Tensor out = empty(shape(), t, device());
    if (device().is_cpu()) {
        kernels::cast_cpu(raw_data(), dtype(), out.raw_data(), t, numel());
    } else {
#ifdef SSLIGHT_WITH_CUDA
        kernels::cuda::cast(raw_data(), dtype(), out.raw_data(), t, numel(), runtime::stream(device()));
        runtime::after_op(device(), "to_dtype");
#endif
    }
    if (is_floating(t) && needs_record({*this})) {
        auto n = std::make_shared<ToDTypeNode>();
        n->src = dtype();
        record(n, {*this}, {out});
    }
    return out;
}

Tensor Tensor::clone() const {
    Tensor out = copy_to(*this, device());
    if (needs_record({*this})) record(std::make_shared<CloneNode>(), {*this}, {out});
    return out;
}

}  // namespace sslight
