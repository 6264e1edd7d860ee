#!/usr/bin/python3
"""torchvision reference for sslight's backbone parity test (tests/test_parity_models.cpp).

For each of mobilenet_v2, resnet18, resnet34, resnet50 (weights=None, fixed seed, classifier replaced by
Identity so the output is the pooled feature): BN affine parameters and running statistics are set to
non-trivial random values, and the state_dict is written as <model>.weights.safetensors (torchvision names,
OIHW, f32). Then, per case (input size, precision, BN mode: train = batch statistics, eval = running
statistics), starting from that state each time: an NHWC input, the features, a fixed upstream gradient, the
input gradient (NHWC), the gradients of a few parameters (first conv, a middle BN weight, the last conv; OIHW)
and, in train mode, a running mean after the update, into <model>.ref.safetensors as
<px>.<f32|f64>.<mode>.<what>. Inputs and upstream gradients are f32 values in both precisions.
Usage: models_parity.py OUT_DIR [MODEL ...]
"""
import os
import sys

import numpy as np
import torch
import torchvision

from write_safetensors import save

PROBES = {  # first conv, a middle BN (its weight's gradient and, in train mode, its running mean), last conv
    "mobilenet_v2": ["features.0.0.weight", "features.9.conv.1.1", "features.18.0.weight"],
    "resnet18": ["conv1.weight", "layer2.1.bn1", "layer4.1.conv2.weight"],
    "resnet34": ["conv1.weight", "layer3.2.bn2", "layer4.2.conv2.weight"],
    "resnet50": ["conv1.weight", "layer3.2.bn2", "layer4.2.conv3.weight"],
}
# f64 at a small size checks the semantics tightly (both sides in float64: no ReLU kink flips); f32 at the
# global-crop size checks the production precision (ResNet50 at 160 px to keep the run short on two cores).
CASES = {
    "mobilenet_v2": [(64, torch.float64), (224, torch.float32)],
    "resnet18": [(64, torch.float64), (224, torch.float32)],
    "resnet34": [(64, torch.float64), (224, torch.float32)],
    "resnet50": [(64, torch.float64), (160, torch.float32)],
}
BATCH = 2


def build(name, seed):
    torch.manual_seed(seed)
    m = getattr(torchvision.models, name)(weights=None)
    if name == "mobilenet_v2":
        m.classifier = torch.nn.Identity()
    else:
        m.fc = torch.nn.Identity()
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for b in bns:
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.2, 0.2)
        # Realistic running statistics (a cumulative average over one batch), then perturbed so that eval mode
        # differs from train mode.
        for b in bns:
            b.momentum = None
        m.train()
        m(torch.randn(4, 3, 64, 64))
        for b in bns:
            b.momentum = 0.1
            b.running_mean.add_(0.2 * b.running_var.sqrt() * torch.randn_like(b.running_mean))
            b.running_var.mul_(torch.empty_like(b.running_var).uniform_(0.7, 1.4))
    return m


def run_case(m, state, name, px, dtype, mode, gen, out):
    m.to(dtype)
    m.load_state_dict(state)
    m.train(mode == "train")
    x0 = torch.randn(BATCH, 3, px, px, generator=gen)
    x = x0.clone().to(dtype).requires_grad_()
    feat = m(x)
    gout = torch.randn(feat.shape, generator=gen)
    feat.backward(gout.to(dtype))
    params = dict(m.named_parameters())
    key = f"{px}.{'f64' if dtype == torch.float64 else 'f32'}.{mode}."
    # np.array copies: .numpy() would share memory with tensors that the next case overwrites in place.
    out[key + "input"] = np.array(x0.permute(0, 2, 3, 1))
    out[key + "features"] = np.array(feat.detach())
    out[key + "gout"] = np.array(gout)
    out[key + "grad.input"] = np.array(x.grad.permute(0, 2, 3, 1))
    first, bn, last = PROBES[name]
    for p in [first, bn + ".weight", last]:
        out[key + "grad." + p] = np.array(params[p].grad)
    if mode == "train":
        out[key + bn + ".running_mean"] = np.array(m.get_submodule(bn).running_mean)
    m.zero_grad()


def main():
    out_dir = sys.argv[1]
    names = sys.argv[2:] or list(CASES)
    for i, name in enumerate(names):
        m = build(name, 100 + i)
        state = {k: v.clone() for k, v in m.state_dict().items()}
        save(os.path.join(out_dir, name + ".weights.safetensors"), {k: v.numpy() for k, v in state.items()},
             {"format": "pt", "torchvision": torchvision.__version__})
        gen = torch.Generator().manual_seed(200 + i)
        ref = {}
        for px, dtype in CASES[name]:
            for mode in ["train", "eval"]:
                run_case(m, state, name, px, dtype, mode, gen, ref)
        save(os.path.join(out_dir, name + ".ref.safetensors"), ref, {"torch": torch.__version__})


if __name__ == "__main__":
    main()
