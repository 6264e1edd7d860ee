// The tape: recording nodes, leaf gradient accumulation and the backward walk (reverse creation order
// over the nodes reachable from the root, each run once all its consumers have delivered gradients).
#include "engine/autograd.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "engine/profiler.h"
#include "kernels/basic.h"

namespace sslight {
namespace {

thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_seq{0};

// Post-accumulate hooks by leaf. The weak pointer tells the leaf apart from a later tensor at a freed address.
struct HookEntry {
    uint64_t id;
    std::weak_ptr<TensorImpl> leaf;
    PostAccumulateHook fn;
};
std::mutex g_hooks_mutex;
std::unordered_map<const TensorImpl*, std::vector<HookEntry>> g_hooks;
std::atomic<size_t> g_num_hooks{0};
std::atomic<uint64_t> g_hook_id{1};

void run_post_accumulate_hooks(const std::shared_ptr<TensorImpl>& impl) {
    if (g_num_hooks.load(std::memory_order_relaxed) == 0) return;
    std::vector<PostAccumulateHook> fns;
    {
        std::lock_guard<std::mutex> lock(g_hooks_mutex);
        auto it = g_hooks.find(impl.get());
        if (it == g_hooks.end()) return;
        for (const HookEntry& h : it->second)
            if (h.leaf.lock() == impl) fns.push_back(h.fn);
    }
    const Tensor leaf(impl);
    for (const PostAccumulateHook& fn : fns) fn(leaf);  // outside the lock: a hook may add or remove hooks
}

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
        run_post_accumulate_hooks(impl);
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
// The outermost guard of a block is a profiler scope (a teacher's forward, the backward walk).
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) {
    t_grad_enabled = false;
    if (profiler::enabled() && prev_) profiler::block_begin("no_grad", this);
}
NoGradGuard::~NoGradGuard() {
    t_grad_enabled = prev_;
    if (profiler::enabled() && prev_) profiler::block_end(this);
}

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
    profiler::op_end(node->name());  // the op has computed its outputs: the profiler's forward boundary
}

void refuse_grad(const char* op, const std::vector<Tensor>& inputs) {
    if (!needs_record(inputs)) return;
    throw AutogradError(str("op '", op, "' has no backward but one of its inputs requires grad; "
                            "detach() the input or run it under NoGradGuard"));
}

uint64_t add_post_accumulate_hook(const Tensor& leaf, PostAccumulateHook hook) {
    SSL_CHECK_T(AutogradError, leaf.defined() && leaf.requires_grad() && !leaf.grad_fn(),
                "add_post_accumulate_hook: expected a leaf that requires grad (a parameter), got ",
                leaf.defined() ? leaf.str() : std::string("an undefined tensor"),
                leaf.defined() && leaf.grad_fn() ? " produced by an op" : "");
    SSL_CHECK_T(AutogradError, hook != nullptr, "add_post_accumulate_hook: the hook is empty");
    std::lock_guard<std::mutex> lock(g_hooks_mutex);
    std::vector<HookEntry>& list = g_hooks[&leaf.impl()];
    const size_t before = list.size();  // hooks of a freed leaf that lived at this address go
    list.erase(std::remove_if(list.begin(), list.end(), [](const HookEntry& h) { return h.leaf.expired(); }),
               list.end());
    g_num_hooks -= before - list.size();
    const uint64_t id = g_hook_id.fetch_add(1);
    list.push_back({id, leaf.impl_ptr(), std::move(hook)});
    g_num_hooks += 1;
    return id;
}

void remove_post_accumulate_hook(uint64_t id) {
    std::lock_guard<std::mutex> lock(g_hooks_mutex);
    for (auto it = g_hooks.begin(); it != g_hooks.end(); ++it) {
        auto& list = it->second;
        auto h = std::find_if(list.begin(), list.end(), [id](const HookEntry& e) { return e.id == id; });
        if (h == list.end()) continue;
        list.erase(h);
        if (list.empty()) g_hooks.erase(it);
        g_num_hooks -= 1;
        return;
    }
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
        std::vector<Tensor> in_grads;
        {
            profiler::Scope scope(node->name(), profiler::Kind::backward);
            in_grads = node->backward(grads, needs);
            node->release();
        }
        node->consumed = dynamic_cast<AccumulateGrad*>(node.get()) == nullptr;  // leaf sinks are reused
        for (size_t i = 0; i < node->next.size(); ++i) {
            const Edge& e = node->next[i];
            if (!e.valid()) continue;
            if (i < in_grads.size() && in_grads[i].defined()) {
                std::vector<Tensor>& slot = pending[e.node.get()];
                slot.resize(e.node->num_outputs);
                Tensor& acc = slot[e.input_nr];
                if (acc.defined()) {
                    profiler::Scope scope("grad_sum", profiler::Kind::engine);
                    acc = accumulate(acc.clone(), in_grads[i]);
                } else {
                    acc = in_grads[i];
                }
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
