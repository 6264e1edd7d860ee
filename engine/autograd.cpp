// The tape: recording nodes, leaf gradient accumulation and the backward walk (reverse creation order
// over the nodes reachable from the root, each run once all its consumers have delivered gradients).
#include "engine/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "kernels/basic.h"

namespace sslight {
namespace {

thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_seq{0};

// Leaf sink: sums incoming gradients into the leaf's .grad (+=, a fresh tensor the first time).
struct AccumulateGrad : Node {
    std::weak_ptr<TensorImpl> leaf;
    const char* name() const override { return "AccumulateGrad"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        auto impl = leaf.lock();
        if (!impl || !grads[0].defined()) return {};
        Tensor g = grads[0];
        SSL_CHECK_T(AutogradError, g.shape() == impl->shape, "gradient of shape ", shape_str(g.shape()),
                    " for leaf of shape ", shape_str(impl->shape));
        if (g.dtype() != impl->dtype) g = g.to(impl->dtype);
        impl->grad = accumulate(impl->grad ? Tensor(impl->grad) : Tensor(), g).impl_ptr();
        return {};
    }
};

Edge edge_of(const Tensor& t) {
    if (!t.defined() || !t.requires_grad()) return {};
    if (t.grad_fn()) return {t.grad_fn(), t.impl().output_nr};
    TensorImpl& impl = t.impl();
    std::shared_ptr<Node> acc = impl.grad_accumulator.lock();
    if (!acc) {
        auto a = std::make_shared<AccumulateGrad>();
        a->leaf = t.impl_ptr();
        a->seq = g_seq.fetch_add(1);
        acc = a;
        impl.grad_accumulator = acc;
    }
    return {acc, 0};
}

}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

bool needs_record(const std::vector<Tensor>& inputs) {
    if (!t_grad_enabled) return false;
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
    node->seq = g_seq.fetch_add(1);
    node->next.clear();
    node->next.reserve(inputs.size());
    for (const Tensor& t : inputs) node->next.push_back(edge_of(t));
    node->num_outputs = static_cast<int>(outputs.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
        if (!outputs[i].defined()) continue;
        TensorImpl& o = outputs[i].impl();
        o.requires_grad = true;
        o.grad_fn = node;
        o.output_nr = static_cast<int>(i);
    }
}

void refuse_grad(const char* op, const std::vector<Tensor>& inputs) {
    if (!needs_record(inputs)) return;
    throw AutogradError(str("op '", op, "' has no backward but one of its inputs requires grad; "
                            "detach() the input or run it under NoGradGuard"));
}

Tensor accumulate(const Tensor& acc, const Tensor& g) {
    NoGradGuard ng;
    if (!acc.defined()) return g.clone();
    check_same_shape("gradient accumulation", acc, g);
    check_same_device("gradient accumulation", acc, g);
    Tensor x = g.dtype() == acc.dtype() ? g : g.to(acc.dtype());
    const int64_t n = acc.numel();
    if (acc.device().is_cpu()) {
        switch (acc.dtype()) {
            case DType::f32: kernels::axpy_cpu(n, 1.f, x.data<float>(), acc.data<float>()); break;
            case DType::f64: kernels::axpy_cpu(n, 1.f, x.data<double>(), acc.data<double>()); break;
            case DType::bf16: kernels::axpy_cpu(n, 1.f, x.data<bf16>(), acc.data<bf16>()); break;
            default: SSL_FAIL("gradient accumulation on non-floating ", acc.str());
        }
        return acc;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(acc.device());
    switch (acc.dtype()) {
        case DType::f32: kernels::cuda::axpy(n, 1.f, x.data<float>(), acc.data<float>(), s); break;
        case DType::bf16: kernels::cuda::axpy(n, 1.f, x.data<bf16>(), acc.data<bf16>(), s); break;
        default: SSL_FAIL("gradient accumulation on ", acc.str(), " is not supported on the GPU");
    }
    runtime::after_op(acc.device(), "accumulate");
#endif
    return acc;
}

void run_backward(const Tensor& root, const Tensor& grad) {
    SSL_CHECK_T(AutogradError, root.requires_grad(),
                "backward() on a tensor that does not require grad (no input of its graph requires grad): ",
                root.str());
    check_same_shape("backward seed", root, grad);
    check_same_device("backward seed", root, grad);
    NoGradGuard ng;
    Edge root_edge = edge_of(root);

    // Count, for each reachable node, how many edges point at it.
    std::unordered_map<Node*, int> deps;
    std::unordered_set<Node*> seen{root_edge.node.get()};
    std::vector<Node*> stack{root_edge.node.get()};
    while (!stack.empty()) {
        Node* n = stack.back();
        stack.pop_back();
        SSL_CHECK_T(AutogradError, !n->consumed, "backward through a graph that was already freed (node '",
                    n->name(), "'): the graph is freed by the first backward()");
        for (const Edge& e : n->next) {
            if (!e.valid()) continue;
            deps[e.node.get()]++;
            if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
        }
    }

    auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) { return a->seq < b->seq; };
    std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later_first)> ready(
        later_first);
    std::unordered_map<Node*, std::vector<Tensor>> pending;
    pending[root_edge.node.get()].resize(root_edge.node->num_outputs);
    pending[root_edge.node.get()][root_edge.input_nr] = grad.dtype() == root.dtype() ? grad : grad.to(root.dtype());
    ready.push(root_edge.node);

    while (!ready.empty()) {
        std::shared_ptr<Node> node = ready.top();
        ready.pop();
        std::vector<Tensor> grads = std::move(pending[node.get()]);
        pending.erase(node.get());
        grads.resize(node->num_outputs);
        std::vector<bool> needs(node->next.size());
        for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->next[i].valid();
        std::vector<Tensor> in_grads = node->backward(grads, needs);
        node->release();
        node->consumed = dynamic_cast<AccumulateGrad*>(node.get()) == nullptr;  // leaf sinks are reused
        for (size_t i = 0; i < node->next.size(); ++i) {
            const Edge& e = node->next[i];
            if (!e.valid()) continue;
            if (i < in_grads.size() && in_grads[i].defined()) {
                std::vector<Tensor>& slot = pending[e.node.get()];
                slot.resize(e.node->num_outputs);
                Tensor& acc = slot[e.input_nr];
                acc = acc.defined() ? accumulate(acc.clone(), in_grads[i]) : in_grads[i];
            }
            if (--deps[e.node.get()] == 0) {
                if (pending.count(e.node.get())) ready.push(e.node);
                // A node whose consumers delivered no gradient still counts as consumed.
                else e.node->consumed = dynamic_cast<AccumulateGrad*>(e.node.get()) == nullptr;
            }
        }
        node->next.clear();  // free the graph behind this node
    }
}

}  // namespace sslight
