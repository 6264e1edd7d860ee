// Torch-layout export/import of module state: OHWI <-> OIHW permutes for 4-D tensors, bf16 <-> f32 casts,
// and a complete up-front validation (names, shapes, dtypes) so a bad file changes nothing and reports every
// problem at once; Module::load_state_dict does the final copy (and re-checks names and shapes).
#include "models/weights.h"

#include "engine/autograd.h"
#include "engine/ops/shape_ops.h"

namespace sslight::models {
namespace {

// The shape the file should hold for a module tensor of shape `s`.
Shape torch_shape(const Shape& s) { return s.size() == 4 ? Shape{s[0], s[3], s[1], s[2]} : s; }

bool dtype_accepted(DType file, DType module) {
    if (file == module) return true;
    return is_floating(module) && (file == DType::f32 || file == DType::bf16);
}

std::string expected_dtypes(DType module) {
    if (!is_floating(module)) return dtype_name(module);
    return module == DType::f64 ? "f64, f32 or bf16" : "f32 or bf16";
}

std::string validate(nn::Module& m, const io::TensorMap& tensors) {
    std::string problems;
    const nn::StateDict own = m.state_dict();
    for (const auto& [name, t] : own) {
        const Shape want = torch_shape(t.shape());
        auto it = tensors.find(name);
        if (it == tensors.end()) {
            problems += str("\n  missing key: ", name, " (expected ", shape_str(want), ")");
            continue;
        }
        if (it->second.shape() != want)
            problems += str("\n  shape mismatch for ", name, ": file has ", shape_str(it->second.shape()),
                            ", expected ", shape_str(want), want.size() == 4 ? " (OIHW)" : "");
        if (!dtype_accepted(it->second.dtype(), t.dtype()))
            problems += str("\n  dtype mismatch for ", name, ": file has ", dtype_name(it->second.dtype()),
                            ", expected ", expected_dtypes(t.dtype()));
    }
    for (const auto& [name, t] : tensors)
        if (!own.count(name)) problems += str("\n  unexpected key: ", name, " ", shape_str(t.shape()));
    return problems;
}

}  // namespace

Tensor ohwi_to_oihw(const Tensor& w) {
    SSL_CHECK_SHAPE(w.dim() == 4, "ohwi_to_oihw: expected a 4-D tensor, got ", shape_str(w.shape()));
    NoGradGuard ng;
    return permute(w.detach(), {0, 3, 1, 2});
}

Tensor oihw_to_ohwi(const Tensor& w) {
    SSL_CHECK_SHAPE(w.dim() == 4, "oihw_to_ohwi: expected a 4-D tensor, got ", shape_str(w.shape()));
    NoGradGuard ng;
    return permute(w.detach(), {0, 2, 3, 1});
}

io::TensorMap export_state_dict(nn::Module& m, DType dtype) {
    SSL_CHECK_DTYPE(dtype == DType::f32 || dtype == DType::bf16, "export_state_dict: dtype must be f32 or bf16, got ",
                    dtype_name(dtype));
    NoGradGuard ng;
    io::TensorMap out;
    for (const auto& [name, t] : m.state_dict()) {
        Tensor v = t.to(Device::cpu());
        if (v.dim() == 4) v = ohwi_to_oihw(v);
        if (is_floating(v.dtype()) && v.dtype() != dtype) v = v.to(dtype);
        out[name] = v;
    }
    return out;
}

void import_state_dict(nn::Module& m, const io::TensorMap& tensors, const std::string& source) {
    const std::string problems = validate(m, tensors);
    if (!problems.empty()) throw IoError(str(source, ": does not match ", m.type_name(), ":", problems));
    NoGradGuard ng;
    nn::StateDict converted;
    for (const auto& [name, t] : tensors) {
        Tensor v = t.dtype() == DType::bf16 ? t.to(DType::f32) : t;
        converted[name] = v.dim() == 4 ? oihw_to_ohwi(v) : v;
    }
    m.load_state_dict(converted, true);
}

void save_backbone(const std::string& path, nn::Module& m, DType dtype) {
    io::save_safetensors(path, export_state_dict(m, dtype),
                         {{"format", "pt"}, {"layout", "OIHW"}, {"module", m.type_name()}});
}

void load_backbone(const std::string& path, nn::Module& m) { import_state_dict(m, io::load_safetensors(path), path); }

}  // namespace sslight::models
