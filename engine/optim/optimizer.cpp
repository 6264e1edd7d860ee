// Optimizer base: parameter validation, lazily created per-parameter state, the state_dict round trip with a
// complete problem report, and SPEC.md §5's parameter grouping (no decay / no LARS adaptation for 1-D
// parameters, no decay for depthwise weights). No gradients: optimizers only read grads.
#include "engine/optim/optimizer.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

#include "engine/autograd.h"

namespace sslight::optim {
namespace {

// Parses "group<i>.param<j>.<name>"; false when the key has another form.
bool parse_key(const std::string& key, size_t& group, size_t& param, std::string& name) {
    auto number = [](const std::string& s, const char* prefix, size_t& out) {
        const size_t n = std::char_traits<char>::length(prefix);
        if (s.size() <= n || s.compare(0, n, prefix) != 0) return false;
        for (size_t i = n; i < s.size(); ++i)
            if (s[i] < '0' || s[i] > '9') return false;
        out = static_cast<size_t>(std::strtoull(s.c_str() + n, nullptr, 10));
        return true;
    };
    const size_t a = key.find('.'), b = a == std::string::npos ? a : key.find('.', a + 1);
    if (b == std::string::npos) return false;
    name = key.substr(b + 1);
    return !name.empty() && number(key.substr(0, a), "group", group) &&
           number(key.substr(a + 1, b - a - 1), "param", param);
}

std::string key_of(size_t group, size_t param, const std::string& name) {
    return str("group", group, ".param", param, ".", name);
}

// A private copy of a state tensor with the parameter's dtype and device.
Tensor state_copy(const Tensor& t, const Tensor& p) {
    Tensor v = t.detach().to(p.dtype()).to(p.device());
    return v.raw_data() == t.raw_data() ? v.clone() : v;
}

}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
    std::set<const Tensor*> seen;
    for (size_t i = 0; i < groups_.size(); ++i) {
        for (size_t j = 0; j < groups_[i].params.size(); ++j) {
            const Tensor* p = groups_[i].params[j];
            SSL_CHECK(p != nullptr, "optimizer: group", i, " param", j, " is a null pointer");
            SSL_CHECK(seen.insert(p).second, "optimizer: group", i, " param", j,
                      " appears in more than one place of the parameter groups");
        }
        state_.emplace_back(groups_[i].params.size());
    }
}

void Optimizer::zero_grad() {
    for (ParamGroup& g : groups_)
        for (Tensor* p : g.params)
            if (p->defined()) p->zero_grad();
}

std::string Optimizer::where(size_t group, size_t param) const {
    const std::string& n = groups_[group].name;
    return str(type_name(), " group", group, n.empty() ? "" : " ('" + n + "')", " param", param);
}

std::vector<std::vector<Optimizer::Work>> Optimizer::collect() {
    SSL_CHECK(state_.size() == groups_.size(), type_name(), ": parameter groups were added after construction");
    std::vector<std::vector<Work>> parts;
    std::vector<std::pair<Device, DType>> keys;
    const std::vector<std::string> names = buffer_names();
    for (size_t i = 0; i < groups_.size(); ++i) {
        SSL_CHECK(state_[i].size() == groups_[i].params.size(), type_name(), " group", i,
                  ": parameters were added after construction");
        for (size_t j = 0; j < groups_[i].params.size(); ++j) {
            const Tensor& p = *groups_[i].params[j];
            if (!p.defined() || !p.grad().defined()) continue;
            const Tensor g = p.grad();
            SSL_CHECK_DTYPE(p.dtype() == DType::f32 || (p.dtype() == DType::f64 && p.device().is_cpu()), where(i, j),
                            ": parameter ", p.str(), " must be f32 (master weights), or f64 on the CPU");
            SSL_CHECK_DTYPE(g.dtype() == p.dtype(), where(i, j), ": grad ", g.str(), " differs from parameter ",
                            p.str());
            SSL_CHECK_SHAPE(g.shape() == p.shape(), where(i, j), ": grad ", g.str(), " differs from parameter ",
                            p.str());
            SSL_CHECK_DEVICE(g.device() == p.device(), where(i, j), ": grad ", g.str(), " differs from parameter ",
                             p.str());
            ParamState& st = state_[i][j];
            if (!st.live) {
                st.live = true, st.step = 0;
                st.buffers.clear();
                for (size_t k = 0; k < names.size(); ++k) st.buffers.push_back(zeros(p.shape(), p.dtype(), p.device()));
            }
            for (Tensor& b : st.buffers)
                if (b.device() != p.device() || b.dtype() != p.dtype()) b = b.to(p.dtype()).to(p.device());
            ++st.step;
            const std::pair<Device, DType> key{p.device(), p.dtype()};
            auto it = std::find(keys.begin(), keys.end(), key);
            if (it == keys.end()) {
                keys.push_back(key);
                parts.emplace_back();
                it = keys.end() - 1;
            }
            parts[static_cast<size_t>(it - keys.begin())].push_back({p, g, &st, &groups_[i]});
        }
    }
    return parts;
}

nn::StateDict Optimizer::state_dict() {
    nn::StateDict out;
    const std::vector<std::string> names = buffer_names();
    for (size_t i = 0; i < state_.size(); ++i)
        for (size_t j = 0; j < state_[i].size(); ++j) {
            const ParamState& st = state_[i][j];
            if (!st.live) continue;
            out[key_of(i, j, "step")] = from_vector(std::vector<int64_t>{st.step}, Shape{});
            for (size_t k = 0; k < names.size(); ++k) out[key_of(i, j, names[k])] = st.buffers[k];
        }
    return out;
}

void Optimizer::load_state_dict(const nn::StateDict& state) {
    const std::vector<std::string> names = buffer_names();
    std::map<std::pair<size_t, size_t>, std::set<std::string>> found;
    std::string problems;
    for (const auto& [key, t] : state) {
        size_t i = 0, j = 0;
        std::string name;
        if (!parse_key(key, i, j, name)) {
            problems += "\n  malformed key: " + key + " (expected group<i>.param<j>.<buffer>)";
            continue;
        }
        if (i >= groups_.size() || j >= groups_[i].params.size()) {
            problems += str("\n  no such parameter: ", key, " (", groups_.size(), " groups",
                            i < groups_.size() ? str(", group", i, " has ", groups_[i].params.size(), " params") : "",
                            ")");
            continue;
        }
        const Tensor& p = *groups_[i].params[j];
        const bool is_step = name == "step";
        if (!is_step && std::find(names.begin(), names.end(), name) == names.end()) {
            problems += str("\n  unexpected key: ", key, " (", type_name(), " has no buffer '", name, "')");
            continue;
        }
        if (!t.defined()) {
            problems += "\n  undefined tensor for " + key;
            continue;
        }
        if (is_step && (t.numel() != 1 || is_floating(t.dtype()) || t.item() < 0)) {
            problems += str("\n  ", key, " must be one integer >= 0, got ", t.str());
        } else if (!is_step && (!p.defined() || t.shape() != p.shape())) {
            problems += str("\n  shape mismatch for ", key, ": got ", shape_str(t.shape()), ", expected ",
                            p.defined() ? shape_str(p.shape()) : std::string("an undefined parameter"));
        } else if (!is_step && !is_floating(t.dtype())) {
            problems += str("\n  ", key, " must be floating point, got ", t.str());
        }
        found[{i, j}].insert(name);
    }
    for (const auto& [ij, have] : found) {
        std::vector<std::string> want = names;
        want.push_back("step");
        for (const std::string& n : want)
            if (!have.count(n))
                problems += str("\n  missing key: ", key_of(ij.first, ij.second, n), " (other state of that parameter",
                                " is present)");
    }
    if (!problems.empty()) throw IoError(str("load_state_dict into ", type_name(), " failed:", problems));

    NoGradGuard ng;
    for (auto& group : state_)
        for (ParamState& st : group) st = ParamState{};
    for (const auto& [ij, have] : found) {
        const Tensor& p = *groups_[ij.first].params[ij.second];
        ParamState& st = state_[ij.first][ij.second];
        st.live = true;
        // Read as an integer: through double, a count near 2^63 would be an undefined double -> int64 cast.
        st.step = state.at(key_of(ij.first, ij.second, "step")).to(DType::i64).to_vector<int64_t>()[0];
        for (const std::string& n : names)
            st.buffers.push_back(state_copy(state.at(key_of(ij.first, ij.second, n)), p));
    }
}

std::vector<ParamGroup> ssl_param_groups(nn::Module& m, double lr, double weight_decay, const std::string& skip_prefix) {
    ParamGroup regularized{{}, lr, weight_decay, true, "regularized"};
    ParamGroup depthwise{{}, lr, 0.0, true, "depthwise"};
    ParamGroup no_decay{{}, lr, 0.0, false, "no_decay"};
    for (auto& [name, t] : m.named_parameters(true)) {
        if (!skip_prefix.empty() && name.compare(0, skip_prefix.size(), skip_prefix) == 0) continue;
        const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
        if (t->dim() <= 1 || bias)
            no_decay.params.push_back(t);
        else if (t->dim() == 4 && t->size(3) == 1)
            depthwise.params.push_back(t);
        else
            regularized.params.push_back(t);
    }
    std::vector<ParamGroup> out;
    for (ParamGroup* g : {&regularized, &depthwise, &no_decay})
        if (!g->params.empty()) out.push_back(std::move(*g));
    return out;
}

}  // namespace sslight::optim
