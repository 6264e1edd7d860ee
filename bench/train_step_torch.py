#!/usr/bin/env python3
"""The SSL training step of bench/bench_train_step.cpp in plain PyTorch: torchvision ResNet18/34 / MobileNetV2 (the
ViT-Tiny of tests/parity/vit_parity.py), SPEC.md §4's DINO / SwAV / MoCo-v2 step and §5's LARS (AdamW for the ViT)
on synthetic views, timed per phase in modes f32 (eager), bf16 (channels_last + bf16 autocast) and compile (GPU).
Gradients are PyTorch autograd's. --sslight BIN runs BIN --csv for the same row first and prints the ratio
sslight / PyTorch in samples/s (> 1: sslight faster); --json prints every row as JSON.
"""
import argparse
import copy
import csv
import io
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROWS = [("dino", "vit_tiny"), ("dino", "resnet18"), ("dino", "resnet34"), ("dino", "mobilenet_v2"),
        ("swav", "mobilenet_v2"), ("moco", "mobilenet_v2")]


def make_backbone(name):
    """(module mapping NCHW images to the pooled feature, feature dim)."""
    if name in ("resnet18", "resnet34"):
        m = getattr(torchvision.models, name)()
        m.fc = nn.Identity()
        return m, 512
    if name == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2()
        m.classifier = nn.Identity()
        return m, 1280
    if name == "vit_tiny":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
        from vit_parity import VisionTransformer
        m = VisionTransformer()
        nn.init.trunc_normal_(m.pos_embed, std=0.02)
        nn.init.trunc_normal_(m.cls_token, std=0.02)
        return m, 192
    raise SystemExit(f"unknown model {name}")


class DINOHead(nn.Module):  # DINO's vision_transformer.DINOHead, nlayers 3
    def __init__(self, d, k, use_bn, norm_last_layer, hidden=2048, bottleneck=256):
        super().__init__()
        bn = (lambda: nn.BatchNorm1d(hidden)) if use_bn else nn.Identity
        self.mlp = nn.Sequential(nn.Linear(d, hidden), bn(), nn.GELU(), nn.Linear(hidden, hidden), bn(), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        lin = nn.Linear(bottleneck, k, bias=False)
        if hasattr(nn.utils.parametrizations, "weight_norm"):  # torch >= 2.1; the old hook form is deprecated
            self.last_layer = nn.utils.parametrizations.weight_norm(lin)
            g = self.last_layer.parametrizations.weight.original0
        else:
            self.last_layer = nn.utils.weight_norm(lin)
            g = self.last_layer.weight_g
        g.data.fill_(1)
        g.requires_grad = not norm_last_layer

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def multicrop(backbone, head, groups):  # DINO's MultiCropWrapper: the backbone once per resolution group
    return head(torch.cat([backbone(g) for g in groups]))


def pair_loss(terms_gg, terms_gl, lgg, lgl):
    return lgg * sum(terms_gg) / len(terms_gg) + lgl * sum(terms_gl) / len(terms_gl)


@torch.no_grad()
def ema(student, teacher, m):
    ps, pt = list(student.parameters()), list(teacher.parameters())
    torch._foreach_mul_(pt, m)
    torch._foreach_add_(pt, ps, alpha=1 - m)


class Dino(nn.Module):
    def __init__(self, model, n_local, lgg, lgl):
        super().__init__()
        vit = model == "vit_tiny"
        def net():  # built twice, not deep-copied: the weight-norm hook's weight is not a leaf in old torch
            bb, d = make_backbone(model)
            return nn.ModuleDict({"backbone": bb, "head": DINOHead(d, 65536 if vit else 4096, not vit, not vit)})
        self.student, self.teacher = net(), net()
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, 65536 if vit else 4096))
        self.n_crops, self.lgg, self.lgl = 2 + n_local, lgg, lgl
        self.temp, self.momentum = 0.07, 0.996

    def trainable(self):
        return self.student

    def forward_loss(self, groups, nets):
        with torch.no_grad():
            t = nets["teacher"](groups[:1])
        s = nets["student"](groups)
        self._t = t.detach()
        s_out = (s.float() / 0.1).chunk(self.n_crops)
        t_out = F.softmax((t.float() - self.center) / self.temp, dim=-1).chunk(2)
        gg, gl = [], []
        for iq, q in enumerate(t_out):
            for v in range(self.n_crops):
                if v != iq:
                    (gg if v < 2 else gl).append(torch.sum(-q * F.log_softmax(s_out[v], dim=-1), dim=-1).mean())
        return pair_loss(gg, gl, self.lgg, self.lgl)

    @torch.no_grad()
    def after_step(self):
        ema(self.student, self.teacher, self.momentum)
        self.center.mul_(0.9).add_(self._t.float().mean(0, keepdim=True), alpha=0.1)

    def nets(self, compile_fn):
        sb, sh = compile_fn(self.student["backbone"]), compile_fn(self.student["head"])
        tb, th = compile_fn(self.teacher["backbone"]), compile_fn(self.teacher["head"])
        return {"student": lambda g: multicrop(sb, sh, g), "teacher": lambda g: multicrop(tb, th, g)}


@torch.no_grad()
def sinkhorn(scores, eps=0.05, iters=3):  # SwAV's distributed_sinkhorn in one process
    q = torch.exp(scores / eps).t()
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


class Swav(nn.Module):
    def __init__(self, model, n_local, lgg, lgl, batch, queue_length=3840):
        super().__init__()
        bb, d = make_backbone(model)
        self.backbone = bb
        self.head = nn.Sequential(nn.Linear(d, 4096), nn.BatchNorm1d(4096), nn.ReLU(), nn.Linear(4096, 128))
        self.prototypes = nn.Linear(128, 3000, bias=False)
        for m in list(self.head) + [self.prototypes]:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        ql = queue_length - queue_length % batch
        self.register_buffer("queue", torch.zeros(2, ql, 128))
        self.n_crops, self.lgg, self.lgl, self.use_queue = 2 + n_local, lgg, lgl, False

    def trainable(self):
        return self

    def forward_loss(self, groups, nets):
        b = groups[0].shape[0] // 2
        with torch.no_grad():
            w = self.prototypes.weight
            w.copy_(F.normalize(w, dim=1))
        emb = F.normalize(nets["head"](torch.cat([nets["backbone"](g) for g in groups])).float(), dim=1)
        out = nets["prototypes"](emb).float()
        self._emb = emb[:2 * b].detach()
        gg, gl = [], []
        for i in range(2):
            with torch.no_grad():
                scores = out[i * b:(i + 1) * b].detach()
                if self.use_queue or self.queue[i, -1].abs().max() != 0:
                    self.use_queue = True
                    scores = torch.cat([self.queue[i] @ self.prototypes.weight.float().t(), scores])
                q = sinkhorn(scores)[-b:]
            for v in range(self.n_crops):
                if v != i:
                    x = out[v * b:(v + 1) * b] / 0.1
                    (gg if v < 2 else gl).append(-torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1)))
        return pair_loss(gg, gl, self.lgg, self.lgl)

    @torch.no_grad()
    def after_step(self):
        b = self._emb.shape[0] // 2
        self.queue[:, b:] = self.queue[:, :-b].clone()
        self.queue[:, :b] = self._emb.view(2, b, -1)

    def nets(self, compile_fn):
        return {"backbone": compile_fn(self.backbone), "head": compile_fn(self.head), "prototypes": self.prototypes}


class Moco(nn.Module):
    def __init__(self, model, n_local, lgg, lgl):
        super().__init__()
        bb, d = make_backbone(model)
        self.q_enc = nn.ModuleDict({"backbone": bb, "head": nn.Sequential(nn.Linear(d, 2048), nn.ReLU(),
                                                                           nn.Linear(2048, 128))})
        self.k_enc = copy.deepcopy(self.q_enc).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(65536, 128), dim=1))
        self.lgg, self.lgl, self.ptr = lgg, lgl, 0

    def trainable(self):
        return self.q_enc

    def forward_loss(self, groups, nets):
        b = groups[0].shape[0] // 2
        with torch.no_grad():
            ema(self.q_enc, self.k_enc, 0.999)  # MoCo: the key encoder's update comes before the keys
            k = F.normalize(nets["k_head"](nets["k_backbone"](groups[0][:b])).float(), dim=1)
        self._k = k
        qs = [nets["q_head"](nets["q_backbone"](groups[0][b:]))]
        if len(groups) > 1:
            qs.append(nets["q_head"](nets["q_backbone"](groups[1])))
        q = F.normalize(torch.cat(qs).float(), dim=1)
        kk = k.repeat(q.shape[0] // b, 1)
        logits = torch.cat([(q * kk).sum(1, keepdim=True), q @ self.queue.t()], dim=1) / 0.2
        ce = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device), reduction="none")
        per_view = ce.view(-1, b).mean(1)
        return self.lgg * per_view[0] + self.lgl * per_view[1:].mean()

    @torch.no_grad()
    def after_step(self):
        b = self._k.shape[0]
        self.queue[self.ptr:self.ptr + b] = self._k
        self.ptr = (self.ptr + b) % self.queue.shape[0]

    def nets(self, compile_fn):
        return {"q_backbone": compile_fn(self.q_enc["backbone"]), "q_head": compile_fn(self.q_enc["head"]),
                "k_backbone": compile_fn(self.k_enc["backbone"]), "k_head": compile_fn(self.k_enc["head"])}


class LARS(torch.optim.Optimizer):
    """SPEC.md §5 LARS (DINO's): d = g + wd·p; d ← d·η‖p‖/‖d‖ when adapted and both norms > 0; μ ← 0.9μ + d;
    p ← p − lr·μ."""

    def __init__(self, groups, lr, momentum=0.9, eta=0.001):
        super().__init__(groups, dict(lr=lr, weight_decay=0, momentum=momentum, eta=eta, lars_adapt=True))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=g["weight_decay"])
                if g["lars_adapt"]:
                    pn, dn = torch.norm(p), torch.norm(d)
                    one = torch.ones_like(pn)
                    d = d.mul(torch.where(pn > 0, torch.where(dn > 0, g["eta"] * pn / dn, one), one))
                st = self.state[p]
                if "mu" not in st:
                    st["mu"] = torch.zeros_like(p)
                st["mu"].mul_(g["momentum"]).add_(d)
                p.add_(st["mu"], alpha=-g["lr"])


def param_groups(module, wd):
    """SPEC.md §5 groups: 1-D params and biases (no wd, not adapted); depthwise conv weights (no wd)."""
    reg, dw, nod = [], [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias"):
            nod.append(p)
        elif p.ndim == 4 and p.shape[1] == 1:
            dw.append(p)
        else:
            reg.append(p)
    groups = [dict(params=reg, weight_decay=wd, lars_adapt=True), dict(params=dw, weight_decay=0.0, lars_adapt=True),
              dict(params=nod, weight_decay=0.0, lars_adapt=False)]
    return [g for g in groups if g["params"]]


def recipe(method, model, sslight):
    vit = model == "vit_tiny"
    n_local = 10 if vit else 6
    lgg = 0.4 if sslight else 1.0 / (1 + n_local)
    return n_local, (128 if sslight else 96), lgg, 1 - lgg


def build(method, model, batch, sslight):
    n_local, _, lgg, lgl = recipe(method, model, sslight)
    if method == "dino":
        return Dino(model, n_local, lgg, lgl)
    if method == "swav":
        return Swav(model, n_local, lgg, lgl, batch)
    return Moco(model, n_local, lgg, lgl)


def optimizer_for(m, method, model, batch):
    if model == "vit_tiny":
        return torch.optim.AdamW(param_groups(m.trainable(), 0.04), lr=5e-4 * batch / 256), "AdamW"
    base = 0.3 if method == "swav" else 0.48
    return LARS(param_groups(m.trainable(), 1e-6), lr=base * batch / 256), "LARS"


def run_row(a, method, model, mode):
    dev = torch.device(a.device)
    torch.manual_seed(0)
    m = build(method, model, a.batch, not a.baseline).to(dev).train()
    opt, opt_name = optimizer_for(m, method, model, a.batch)
    n_local, ls, _, _ = recipe(method, model, not a.baseline)
    fmt = torch.channels_last if mode != "f32" and model != "vit_tiny" else torch.contiguous_format
    groups = [torch.randn(2 * a.batch, 3, 224, 224, device=dev).contiguous(memory_format=fmt),
              torch.randn(n_local * a.batch, 3, ls, ls, device=dev).contiguous(memory_format=fmt)]
    if fmt == torch.channels_last:
        m = m.to(memory_format=torch.channels_last)
    # dynamic=False: one graph per crop size, as the backbone sees two sizes every step
    nets = m.nets((lambda x: torch.compile(x, dynamic=False)) if mode == "compile" else (lambda x: x))
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=mode != "f32")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], 0.0
    for it in range(a.warmup + a.steps):
        if it == a.warmup and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = [time.perf_counter()]
        with torch.autocast(**amp):
            out = m.forward_loss(groups, nets)
        sync(), t.append(time.perf_counter())
        out.backward()
        sync(), t.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(), t.append(time.perf_counter())
        m.after_step()
        sync(), t.append(time.perf_counter())
        loss = out.item()
        if it >= a.warmup:
            times.append([t[4] - t[0]] + [t[i + 1] - t[i] for i in range(4)])
    med = [sorted(c)[len(c) // 2] for c in zip(*times)]
    note = MODE_NOTE[mode] if fmt == torch.channels_last else MODE_NOTE[mode].replace("channels_last+", "")
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")
    return dict(impl=f"torch-{mode}", method=method, model=model, recipe="baseline" if a.baseline else "sslight",
                device=dev.type, dtype="bf16" if mode != "f32" else "f32", batch=a.batch,
                views=f"2x224 + {n_local}x{ls}", samples_s=a.batch / med[0], step_ms=med[0] * 1e3,
                forward_ms=med[1] * 1e3, backward_ms=med[2] * 1e3, optimizer_ms=med[3] * 1e3, method_ms=med[4] * 1e3,
                comm_ms=0.0, peak_mib=peak, loss=loss, note=opt_name + note)


MODE_NOTE = {"f32": "", "bf16": " channels_last+autocast", "compile": " compile+channels_last+autocast"}


HEAD = ("%-16s %-6s %-13s %-8s %-5s %-5s %5s %-12s %10s %9s %9s %9s %9s %9s %7s %9s %8s  %s" %
        ("impl", "method", "model", "recipe", "dev", "dtype", "batch", "views", "samples/s", "step ms", "fwd ms",
         "bwd ms", "optim ms", "method ms", "comm ms", "peak MiB", "ratio", "note"))


def fmt_row(r, ref):
    ratio = ref / r["samples_s"] if ref and r.get("samples_s") else float("nan")
    f = lambda k: float("nan") if r.get(k) in (None, "") else float(r[k])  # noqa: E731
    return ("%-16s %-6s %-13s %-8s %-5s %-5s %5s %-12s %10.2f %9.1f %9.1f %9.1f %9.1f %9.1f %7.1f %9.1f %7.2fx  %s" %
            (r["impl"], r["method"], r["model"], r["recipe"], r["device"], r["dtype"], r["batch"], r["views"],
             f("samples_s"), f("step_ms"), f("forward_ms"), f("backward_ms"), f("optimizer_ms"), f("method_ms"),
             f("comm_ms"), f("peak_mib"), ratio, r.get("note", "")))


def summary_line(method, model, table, ref):
    """One compact line per row: sslight samples/s and its ratio to each PyTorch mode."""
    parts = []
    for r in table:
        sps = r.get("samples_s")
        if not sps:
            parts.append(f"{r['impl']} failed")
        elif r["impl"] == "sslight":
            parts.append(f"sslight {r['dtype']} {sps:.4g}/s")
        else:
            parts.append(f"{r['impl']} {sps:.4g}/s" + (f" (sslight {ref / sps:.2f}x)" if ref else ""))
    return f"train-step {method} {model}: " + "; ".join(parts)


def run_sslight(a, method, model, dtype):
    cmd = [a.sslight, "--method", method, "--model", model, "--batch", str(a.batch), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--device", a.device, "--dtype", dtype, "--csv",
           "--baseline" if a.baseline else "--sslight"]
    failed = dict(impl="sslight", method=method, model=model, recipe="-", device=a.device, dtype=dtype, batch=a.batch,
                  views="-")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return dict(failed, note=f"timed out after {a.timeout:.0f} s")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    if not rows:
        return dict(failed, note=f"failed rc {p.returncode}: {p.stderr.strip()[-200:]}")
    r = rows[0]
    if r.get("note", "").startswith("error"):
        return dict(failed, note=r["note"][:200])
    for k in ("samples_s", "step_ms", "forward_ms", "backward_ms", "optimizer_ms", "method_ms", "comm_ms", "peak_mib"):
        r[k] = float(r[k])
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["dino", "swav", "moco"])
    ap.add_argument("--model", choices=["resnet18", "resnet34", "mobilenet_v2", "vit_tiny"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--baseline", action="store_true", help="baseline recipe (default: SSLight)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default=None, help="comma list of f32,bf16,compile (default: all; CPU: f32,bf16)")
    ap.add_argument("--sslight", help="path of bench_train_step: run it first and print ratios")
    ap.add_argument("--sslight-dtypes", default="f32", help="dtypes to run bench_train_step with (f32,bf16)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per bench_train_step run")
    ap.add_argument("--json", action="store_true", help="print one JSON list of all rows instead of tables")
    a = ap.parse_args()
    gpu = a.device.startswith("cuda")
    a.batch = a.batch or (128 if gpu else 4)
    a.steps = a.steps or (10 if gpu else 3)
    a.warmup = a.warmup if a.warmup is not None else (3 if gpu else 1)
    modes = (a.modes or ("f32,bf16,compile" if gpu else "f32,bf16")).split(",")
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # f32 as sslight's default: no TF32 in GEMMs or convs
        torch.backends.cudnn.allow_tf32 = False
    rows = [(a.method, a.model)] if a.method and a.model else ROWS
    everything, summary = [], []
    if not a.json:
        print(f"training step, torch {torch.__version__}, {a.steps} steps after {a.warmup} warm-up (median ms per "
              f"phase); ratio = sslight samples/s / this row's samples/s (> 1: sslight faster)", flush=True)
    for method, model in rows:
        table = []
        ref = None
        if a.sslight:
            for dt in a.sslight_dtypes.split(","):
                r = run_sslight(a, method, model, dt)
                table.append(r)
                ref = ref or r.get("samples_s")
        for mode in modes:
            try:
                table.append(run_row(a, method, model, mode))
            except Exception as e:  # one failing mode must not hide the others
                table.append(dict(impl=f"torch-{mode}", method=method, model=model, recipe="-", device=a.device,
                                  dtype="-", batch=a.batch, views="-", note=f"error: {type(e).__name__}: {e}"[:200]))
            if gpu:
                torch.cuda.empty_cache()
        everything += table
        if not a.json:
            print(f"\n{method} {model}\n{HEAD}")
            for r in table:
                print(fmt_row(r, ref), flush=True)
            summary.append(summary_line(method, model, table, ref))
    if not a.json:
        print("\n" + "\n".join(summary))
    if a.json:
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in everything]
        print(json.dumps(clean, indent=1))


if __name__ == "__main__":
    main()
