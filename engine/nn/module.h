// Module: a tree of named submodules owning parameters (trainable tensors) and buffers (state such as
// BatchNorm running statistics). Names compose with '.' exactly like PyTorch state_dict keys
// ("layer1.0.conv1.weight"), so weights map one to one onto torchvision/timm. Train/eval mode and
// freezing propagate to children. Modules are neither copyable nor movable: the registry points at
// the Tensor members of the derived class.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace sslight::nn {

using StateDict = std::map<std::string, Tensor>;

class Module {
public:
    explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
    virtual ~Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // Single-input forward; modules with other signatures add their own methods and keep this one
    // throwing.
    virtual Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }

    const std::string& type_name() const { return type_name_; }

    // Traversal, in registration order, depth first; names are full dotted paths.
    std::vector<std::pair<std::string, Tensor*>> named_parameters(bool trainable_only = false);
    std::vector<std::pair<std::string, Tensor*>> named_buffers();
    std::vector<std::pair<std::string, Module*>> named_modules();  // includes this module as ""
    std::vector<Tensor*> parameters(bool trainable_only = false);
    int64_t num_parameters(bool trainable_only = false);

    // Mode and freezing.
    virtual void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }
    void set_requires_grad(bool on);  // freeze (false) / unfreeze (true) every parameter
    void zero_grad();

    // Moves every parameter and buffer to a device or floating dtype (in place: members are replaced).
    void to(Device d);

    // Parameters and buffers by full name (detached, sharing storage).
    StateDict state_dict();
    // Copies values in. Every name, shape and dtype is checked and all problems are reported at once
    // (missing keys, unexpected keys when strict, shape mismatches) in one IoError.
    void load_state_dict(const StateDict& state, bool strict = true);

protected:
    Tensor& register_parameter(const std::string& name, Tensor* slot, Tensor value);
    // host = true: the buffer stays on the CPU whatever device the module moves to (small counters such as
    // BatchNorm's num_batches_tracked, updated every step: keeping them on the host avoids a device sync).
    Tensor& register_buffer(const std::string& name, Tensor* slot, Tensor value, bool host = false);
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        add_child(name, m);
        return m;
    }
    void add_child(const std::string& name, std::shared_ptr<Module> m);

private:
    void collect(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out);

    std::string type_name_;
    bool training_ = true;
    std::vector<std::pair<std::string, Tensor*>> params_;
    struct BufferSlot {
        std::string name;
        Tensor* slot;
        bool host;
    };
    std::vector<BufferSlot> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace sslight::nn
