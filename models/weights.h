// Weight interchange with torchvision / timm: safetensors files whose names, shapes and dtypes are what
// torch's state_dict() gives (so `model.load_state_dict(safetensors.torch.load_file(path), strict=False)`
// takes them, the classifier aside). The one layout difference: 4-D convolution weights are OHWI
// [out, kh, kw, in/groups] inside sslight and OIHW [out, in/groups, kh, kw] in the file; they are permuted on
// the way out and in. Everything else passes unchanged. No gradients: these are plain copies.
#pragma once
#include <string>

#include "engine/io/safetensors.h"
#include "engine/nn/module.h"

namespace sslight::models {

// [O, H, W, I] -> [O, I, H, W] and back (copies on the tensor's device; any dtype).
Tensor ohwi_to_oihw(const Tensor& w);
Tensor oihw_to_ohwi(const Tensor& w);

// The module's parameters and buffers in torch layout, on the CPU. dtype f32 or bf16 applies to the floating
// tensors (integers such as num_batches_tracked stay i64).
io::TensorMap export_state_dict(nn::Module& m, DType dtype = DType::f32);

// Checks every tensor of `tensors` (torch layout) against the module: missing and unexpected names, shapes
// (compared in torch layout), dtypes (a floating parameter accepts its own dtype, f32 or bf16; others must
// match exactly); all problems are reported together in one IoError that starts with `source` (a file name)
// and nothing is modified. Then converts (bf16 -> f32, OIHW -> OHWI) and copies in.
void import_state_dict(nn::Module& m, const io::TensorMap& tensors, const std::string& source);

// save_safetensors(export_state_dict(m, dtype)) with metadata {format: pt, layout: OIHW}.
void save_backbone(const std::string& path, nn::Module& m, DType dtype = DType::f32);
// import_state_dict(load_safetensors(path)). Throws IoError naming the file.
void load_backbone(const std::string& path, nn::Module& m);

}  // namespace sslight::models
