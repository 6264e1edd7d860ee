#!/usr/bin/python3
"""Plain-PyTorch DINO step for sslight's method parity test (tests/test_parity_methods.cpp).

Reads IN (safetensors written by the test): the student's state (torchvision resnet18 names under "backbone.",
DINO's DINOHead names under "head.", OIHW), the centre, the views (NHWC f32: "globals" [2B,S,S,3], "locals"
[N*B,s,s,3]) and scalars (lr, lambda_gg, lambda_gl, epochs, iters_per_epoch, iteration, epoch, warmup).
Builds DINO's MultiCropWrapper(resnet18 with fc = Identity, DINOHead(use_bn=True, norm_last_layer=True)), the
teacher as a second instance loaded with the student's state (train mode, no grad), and runs one step as DINO's
main_dino.py: teacher temperature and EMA momentum from DINO's schedules, DINOLoss with the gg / gl terms weighted
by the λ's, backward, plain SGD, EMA over parameters, centre update. Writes OUT: the loss, gradients and post-step
values of probe parameters (OIHW), the teacher's probes and their change in the step, the centre, and the schedule
values.
Usage: methods_parity.py IN OUT
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from write_safetensors import save

PROBES = ["backbone.conv1.weight", "backbone.layer4.1.bn2.weight", "head.mlp.0.weight", "head.mlp.1.weight",
          "head.mlp.6.weight", "head.last_layer.weight_v"]


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt[v["dtype"]]).reshape(v["shape"]).copy())
    return out


class DINOHead(nn.Module):  # DINO's vision_transformer.DINOHead (nlayers 3)
    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class MultiCropWrapper(nn.Module):  # DINO's utils.MultiCropWrapper
    def __init__(self, backbone, head):
        super().__init__()
        backbone.fc = nn.Identity()
        self.backbone, self.head = backbone, head

    def forward(self, groups):
        return self.head(torch.cat([self.backbone(g) for g in groups]))


def cosine_scheduler(base, final, epochs, niter):  # DINO's utils.cosine_scheduler without warmup
    iters = np.arange(epochs * niter)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))


def dino_loss(s, t, center, temp, lgg, lgl, n_crops):
    s_out = (s / 0.1).chunk(n_crops)
    t_out = F.softmax((t - center) / temp, dim=-1).detach().chunk(2)
    gg, gl = 0.0, 0.0
    for iq, q in enumerate(t_out):
        for v in range(n_crops):
            if v == iq:
                continue
            term = torch.sum(-q * F.log_softmax(s_out[v], dim=-1), dim=-1).mean()
            if v < 2:
                gg = gg + term
            else:
                gl = gl + term
    return lgg * gg / 2 + lgl * gl / (2 * (n_crops - 2))


def main():
    inp = load(sys.argv[1])
    sc = {k[7:]: float(v) for k, v in inp.items() if k.startswith("scalar.")}
    state = {k[8:]: v for k, v in inp.items() if k.startswith("student.")}
    K, bottleneck = state["head.last_layer.weight_v"].shape
    hidden = state["head.mlp.0.weight"].shape[0]
    student = MultiCropWrapper(torchvision.models.resnet18(), DINOHead(512, K, hidden, bottleneck))
    student.load_state_dict(state, strict=True)
    teacher = MultiCropWrapper(torchvision.models.resnet18(), DINOHead(512, K, hidden, bottleneck))
    teacher.load_state_dict(student.state_dict())  # as main_dino.py
    for p in teacher.parameters():
        p.requires_grad = False
    g = inp["globals"].permute(0, 3, 1, 2).contiguous()
    loc = inp["locals"].permute(0, 3, 1, 2).contiguous()
    B = g.shape[0] // 2
    n_crops = 2 + loc.shape[0] // B
    epochs, niter = int(sc["epochs"]), int(sc["iters_per_epoch"])
    warm = int(sc["warmup"])
    temps = np.concatenate((np.linspace(0.04, 0.07, warm), np.ones(epochs - warm) * 0.07))
    temp = float(temps[int(sc["epoch"])])
    momentum = float(cosine_scheduler(0.996, 1, epochs, niter)[int(sc["iteration"])])
    center = inp["center"].reshape(1, -1)

    t_before = {k: v.detach().clone() for k, v in teacher.named_parameters()}
    s = student([g, loc])
    with torch.no_grad():
        t = teacher([g])
    loss = dino_loss(s, t, center, temp, sc["lambda_gg"], sc["lambda_gl"], n_crops)
    loss.backward()
    params = dict(student.named_parameters())
    out = {"loss": loss.detach().double().numpy(), "teacher_temp": np.array(temp), "momentum": np.array(momentum)}
    for name in PROBES:
        out["grad." + name] = params[name].grad.numpy().copy()
    with torch.no_grad():
        for p in student.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-sc["lr"])
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.data.mul_(momentum).add_((1 - momentum) * ps.detach().data)
        batch_center = torch.sum(t, dim=0, keepdim=True) / len(t)
        center = center * 0.9 + batch_center * 0.1
    tparams = dict(teacher.named_parameters())
    for name in PROBES:
        out["student." + name] = params[name].detach().numpy().copy()
        out["teacher." + name] = tparams[name].detach().numpy().copy()
        out["teacher_delta." + name] = (tparams[name].detach().double() - t_before[name].double()).numpy()
    out["teacher.backbone.bn1.running_mean"] = dict(teacher.named_buffers())["backbone.bn1.running_mean"].numpy()
    out["center"] = center.reshape(-1).numpy()
    save(sys.argv[2], out)


if __name__ == "__main__":
    main()
