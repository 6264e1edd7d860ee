// Optimizers over parameter groups (SPEC.md §5): SGD (PyTorch, dampening 0), LARS (the DINO/SSLight variant)
// and AdamW (PyTorch), each one fused multi-tensor update per step (kernels/optim.h) on the CPU or the GPU.
// Parameters are updated in place through the Tensor* of their Module; a parameter whose grad is undefined is
// skipped and its state is not touched. Master weights and state are f32 (f64 on the CPU for checks).
// State is per parameter, created on its first step, keyed "group<i>.param<j>.<buffer>" with "step" counts.
#pragma once
#include <string>
#include <vector>

#include "engine/nn/module.h"
#include "engine/tensor.h"
#include "kernels/optim.h"

namespace sslight::optim {

struct ParamGroup {
    std::vector<Tensor*> params;
    double lr = 0;
    double weight_decay = 0;
    bool lars_adapt = true;  // LARS only: apply the trust ratio η‖p‖/‖d‖
    std::string name;
};

class Optimizer {
public:
    explicit Optimizer(std::vector<ParamGroup> groups);
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    virtual void step() = 0;
    void zero_grad();  // every parameter's grad becomes undefined (PyTorch set_to_none)
    std::vector<ParamGroup>& groups() { return groups_; }

    // The state of every parameter that has taken a step: "group<i>.param<j>.step" (i64, shape []) and one
    // tensor per buffer (sharing storage with the optimizer's).
    virtual nn::StateDict state_dict();
    // Replaces the whole state by copies of `state` (on each parameter's device). Every key is checked (form,
    // group and parameter index, buffer name, shape, completeness) and all problems are reported in one IoError.
    virtual void load_state_dict(const nn::StateDict& state);

    virtual const char* type_name() const = 0;

protected:
    struct ParamState {
        bool live = false;  // false until the parameter's first step
        int64_t step = 0;
        std::vector<Tensor> buffers;  // buffer_names() order, the parameter's shape, dtype and device
    };
    // One parameter taking part in this step (its grad is defined).
    struct Work {
        Tensor param, grad;
        ParamState* state;
        const ParamGroup* group;
    };

    // Names of the per-parameter state buffers, e.g. {"momentum_buffer"}.
    virtual std::vector<std::string> buffer_names() const = 0;
    // Parameters with a grad, validated (f32, or f64 on the CPU; grad of the same shape, dtype and device),
    // their state created or moved to the parameter's device and their step counts advanced; partitioned by
    // (device, dtype) in order of first appearance.
    std::vector<std::vector<Work>> collect();
    std::string where(size_t group, size_t param) const;  // "SGD group1 ('no_decay') param3"
    // The kernel view of one (device, dtype) part: pointers, the group's lr / weight decay / adaptation, steps.
    template <class T>
    static std::vector<kernels::OptimSlot<T>> slots_of(const std::vector<Work>& part) {
        std::vector<kernels::OptimSlot<T>> out;
        for (const Work& w : part) {
            kernels::OptimSlot<T> s;
            s.param = w.param.data<T>();
            s.grad = w.grad.data<T>();
            s.buf1 = w.state->buffers.size() > 0 ? w.state->buffers[0].data<T>() : nullptr;
            s.buf2 = w.state->buffers.size() > 1 ? w.state->buffers[1].data<T>() : nullptr;
            s.numel = w.param.numel();
            s.lr = w.group->lr, s.weight_decay = w.group->weight_decay, s.lars_adapt = w.group->lars_adapt;
            s.step = w.state->step;
            out.push_back(s);
        }
        return out;
    }

    std::vector<ParamGroup> groups_;
    std::vector<std::vector<ParamState>> state_;  // [group][param]
};

class SGD : public Optimizer {
public:
    explicit SGD(std::vector<ParamGroup> groups, double momentum = 0, bool nesterov = false);
    void step() override;
    const char* type_name() const override { return "SGD"; }

protected:
    std::vector<std::string> buffer_names() const override;

private:
    double momentum_;
    bool nesterov_;
};

class LARS : public Optimizer {
public:
    explicit LARS(std::vector<ParamGroup> groups, double momentum = 0.9, double eta = 0.001);
    void step() override;
    const char* type_name() const override { return "LARS"; }
    // [‖p‖², ‖g + wd·p‖²] of every parameter in the last step, in the order the step visited them (CPU only;
    // GPU steps keep them on the device and leave this empty).
    const std::vector<double>& last_sumsq() const { return last_sumsq_; }

protected:
    std::vector<std::string> buffer_names() const override { return {"mu"}; }

private:
    double momentum_, eta_;
    std::vector<double> last_sumsq_;
    Tensor workspace_;  // GPU: chunk partials followed by the per-tensor sums, reused across steps
};

class AdamW : public Optimizer {
public:
    explicit AdamW(std::vector<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
    void step() override;
    const char* type_name() const override { return "AdamW"; }

protected:
    std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }

private:
    double beta1_, beta2_, eps_;
};

// SPEC.md §5 grouping of a module's trainable parameters (frozen ones are left out; empty groups dropped):
//   "regularized": weight_decay, LARS-adapted (conv and linear weights)
//   "depthwise":   weight_decay 0, LARS-adapted (4-D weights [C, k, k, 1], depthwise in the OHWI layout)
//   "no_decay":    weight_decay 0, not adapted (1-D parameters and names ending in ".bias": biases, norms)
// Every group gets learning rate `lr`. Parameters whose name starts with skip_prefix (when not empty) are left out.
std::vector<ParamGroup> ssl_param_groups(nn::Module& m, double lr, double weight_decay,
                                         const std::string& skip_prefix = "");

}  // namespace sslight::optim
