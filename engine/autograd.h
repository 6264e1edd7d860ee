// Reverse-mode autograd on a dynamic tape. Each differentiable op records one Node holding exactly what
// its backward needs; backward() walks the nodes reachable from the root in reverse creation order,
// sums gradients that meet at a tensor, hands each node a needs-grad mask (one flag per input) and
// accumulates (+=) into leaf .grad. The graph is freed as it is consumed: a second backward through the
// same nodes fails with AutogradError. Backward runs with gradient recording off (no double backward).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace sslight {

struct Edge {
    std::shared_ptr<Node> node;  // null: that input needs no gradient
    int input_nr = 0;            // which output of `node` the input was
    bool valid() const { return node != nullptr; }
};

struct Node {
    virtual ~Node() = default;
    virtual const char* name() const = 0;
    // grads: one per output of the op (undefined where that output received no gradient; ops treat an
    // undefined gradient as zeros). needs[i]: input i needs a gradient. Returns one tensor per input,
    // undefined where needs[i] is false. Activation gradients are written fresh (=), never aliased to
    // a saved tensor that the op could later modify.
    virtual std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) = 0;
    // Drops saved tensors once backward has run (or when the graph is discarded).
    virtual void release() {}

    std::vector<Edge> next;  // one per input, in the op's input order
    int num_outputs = 1;
    uint64_t seq = 0;        // creation order; backward runs later nodes first
    bool consumed = false;   // backward already ran through this node
};

// Gradient recording switch (thread-local). NoGradGuard turns it off for its scope.
bool grad_enabled();
class NoGradGuard {
public:
    NoGradGuard();
    ~NoGradGuard();
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool prev_;
};

// True when recording is on and at least one input requires a gradient.
bool needs_record(const std::vector<Tensor>& inputs);

// Connects `node` to the inputs and marks the outputs as produced by it (requires_grad = true).
// Call only when needs_record(inputs). Sets node->num_outputs = outputs.size().
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs);

// For ops without a backward: throws AutogradError when the graph would need one through `op`.
void refuse_grad(const char* op, const std::vector<Tensor>& inputs);

// Runs backward from `root` with seed gradient `grad` (same shape, dtype and device as root).
void run_backward(const Tensor& root, const Tensor& grad);

// Sums `g` into `acc` (acc undefined -> a fresh copy of g). Used for gradient accumulation.
Tensor accumulate(const Tensor& acc, const Tensor& g);

// Post-accumulate hook: hook(leaf) runs inside backward right after `leaf` (a tensor that requires grad and has no
// grad_fn) has accumulated this backward's gradient into .grad: once per backward that reaches the leaf (gradients
// meeting at it are summed first), on the thread running backward, in the order the leaves complete, with gradient
// recording off. Data parallel launches a gradient bucket's all-reduce from it while backward continues. Hooks are
// keyed by the leaf's storage object: they follow copies of the Tensor handle, not a parameter slot reassigned later.
using PostAccumulateHook = std::function<void(const Tensor& leaf)>;
uint64_t add_post_accumulate_hook(const Tensor& leaf, PostAccumulateHook hook);  // returns the id to remove it
void remove_post_accumulate_hook(uint64_t id);  // unknown ids are ignored

}  // namespace sslight
