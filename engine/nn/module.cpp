// Module registry, traversal, modes, device moves and state_dict load/save with complete mismatch reports.
#include "engine/nn/module.h"

#include <set>

#include "engine/autograd.h"

namespace sslight::nn {
namespace {
std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
}
void check_name(const std::string& name) {
    SSL_CHECK(!name.empty() && name.find('.') == std::string::npos, "module member name '", name,
              "' must be non-empty and contain no '.'");
}
}  // namespace

Tensor Module::forward(const Tensor&) { SSL_FAIL(type_name_, " has no single-input forward"); }

Tensor& Module::register_parameter(const std::string& name, Tensor* slot, Tensor value) {
    check_name(name);
    check_float("register_parameter", value);
    *slot = value.requires_grad() ? value : value.requires_grad_(true);
    params_.emplace_back(name, slot);
    return *slot;
}

Tensor& Module::register_buffer(const std::string& name, Tensor* slot, Tensor value, bool host) {
    check_name(name);
    SSL_CHECK(!host || !value.defined() || value.device().is_cpu(), "host buffer '", name, "' must be a CPU tensor");
    *slot = value;
    buffers_.push_back({name, slot, host});
    return *slot;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
    check_name(name);
    SSL_CHECK(m != nullptr, "register_module('", name, "') with a null module");
    children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Module*>>& out) {
    out.emplace_back(prefix, this);
    for (auto& [name, child] : children_) child->collect(join(prefix, name), out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
    std::vector<std::pair<std::string, Module*>> out;
    collect("", out);
    return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_parameters(bool trainable_only) {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (auto& [prefix, m] : named_modules())
        for (auto& [name, t] : m->params_)
            if (!trainable_only || t->requires_grad()) out.emplace_back(join(prefix, name), t);
    return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_buffers() {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (auto& [prefix, m] : named_modules())
        for (const BufferSlot& b : m->buffers_)
            if (b.slot->defined()) out.emplace_back(join(prefix, b.name), b.slot);
    return out;
}

std::vector<Tensor*> Module::parameters(bool trainable_only) {
    std::vector<Tensor*> out;
    for (auto& [name, t] : named_parameters(trainable_only)) out.push_back(t);
    return out;
}

int64_t Module::num_parameters(bool trainable_only) {
    int64_t n = 0;
    for (Tensor* t : parameters(trainable_only)) n += t->numel();
    return n;
}

void Module::train(bool on) {
    training_ = on;
    for (auto& [name, child] : children_) child->train(on);
}

void Module::set_requires_grad(bool on) {
    for (Tensor* t : parameters()) {
        Tensor d = t->detach();
        d.requires_grad_(on);
        *t = d;
    }
}

void Module::zero_grad() {
    for (Tensor* t : parameters()) t->zero_grad();
}

void Module::to(Device d) {
    NoGradGuard ng;
    for (Tensor* t : parameters()) {
        if (t->device() == d) continue;
        const bool rg = t->requires_grad();
        *t = t->detach().to(d);
        t->requires_grad_(rg);
    }
    for (auto& [prefix, m] : named_modules())
        for (const BufferSlot& b : m->buffers_)
            if (!b.host && b.slot->defined() && b.slot->device() != d) *b.slot = b.slot->to(d);
}

StateDict Module::state_dict() {
    StateDict out;
    for (auto& [name, t] : named_parameters()) out[name] = t->detach();
    for (auto& [name, t] : named_buffers()) out[name] = t->detach();
    return out;
}

void Module::load_state_dict(const StateDict& state, bool strict) {
    std::vector<std::pair<std::string, Tensor*>> slots = named_parameters();
    for (auto& b : named_buffers()) slots.push_back(b);
    std::set<std::string> known;
    std::string problems;
    for (auto& [name, t] : slots) {
        known.insert(name);
        auto it = state.find(name);
        if (it == state.end()) {
            problems += "\n  missing key: " + name + " (expected " + shape_str(t->shape()) + ")";
        } else if (it->second.shape() != t->shape()) {
            problems += str("\n  shape mismatch for ", name, ": got ", shape_str(it->second.shape()), ", expected ",
                            shape_str(t->shape()));
        } else if (is_floating(it->second.dtype()) != is_floating(t->dtype())) {
            // f32 <-> bf16 <-> f64 converts on load; a float where an integer (a step count, a queue pointer)
            // belongs, or the other way round, is a different tensor.
            problems += str("\n  dtype mismatch for ", name, ": got ", dtype_name(it->second.dtype()), ", expected ",
                            dtype_name(t->dtype()));
        }
    }
    if (strict)
        for (auto& [name, v] : state)
            if (!known.count(name)) problems += "\n  unexpected key: " + name + " " + shape_str(v.shape());
    if (!problems.empty()) throw IoError("load_state_dict into " + type_name_ + " failed:" + problems);

    NoGradGuard ng;
    for (auto& [name, t] : slots) {
        Tensor v = state.at(name);
        if (v.dtype() != t->dtype()) v = v.to(t->dtype());
        runtime::copy(t->raw_data(), t->device(), v.raw_data(), v.device(), t->nbytes());
    }
}

}  // namespace sslight::nn
