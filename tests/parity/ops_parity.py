#!/usr/bin/python3
"""PyTorch reference for sslight's op parity test (tests/test_parity_ops.cpp).

For each case: inputs drawn from a fixed seed, the output of the torch op in float64, a random upstream
gradient and the gradients of every differentiable input, written to one safetensors file as
<case>.in<i>, <case>.out, <case>.gout, <case>.grad<i>. NHWC tensors are permuted to NCHW for torch and
back. Usage: ops_parity.py OUT.safetensors
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from write_safetensors import save

rng = np.random.default_rng(2023)
tensors = {}


def arr(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape)


def case(name, fn, inputs, differentiable=None):
    ts = [torch.tensor(a, dtype=torch.float64 if a.dtype != np.int64 else torch.int64) for a in inputs]
    diff = differentiable if differentiable is not None else [a.dtype == np.float64 for a in inputs]
    for t, d in zip(ts, diff):
        t.requires_grad_(d)
    out = fn(*ts)
    gout = torch.tensor(arr(*out.shape))
    grads = torch.autograd.grad(out, [t for t, d in zip(ts, diff) if d], gout)
    for i, a in enumerate(inputs):
        tensors[f"{name}.in{i}"] = a
    tensors[f"{name}.out"] = out.detach().numpy()
    tensors[f"{name}.gout"] = gout.numpy()
    gi = iter(grads)
    for i, d in enumerate(diff):
        if d:
            tensors[f"{name}.grad{i}"] = next(gi).numpy()


def nchw(x):
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


def oihw(w):  # sslight stores conv weights OHWI
    return w.permute(0, 3, 1, 2)


case("gelu", F.gelu, [arr(7, 13, lo=-3, hi=3)])
case("sigmoid", torch.sigmoid, [arr(7, 13, lo=-4, hi=4)])
case("tanh", torch.tanh, [arr(7, 13, lo=-2, hi=2)])
case("exp_log", lambda x: torch.log(torch.exp(x) + 1.5), [arr(5, 9)])
case("softmax", lambda x: F.softmax(x, -1), [arr(5, 300, lo=-5, hi=5)])
case("log_softmax", lambda x: F.log_softmax(x, -1), [arr(5, 300, lo=-5, hi=5)])
case("cross_entropy", F.cross_entropy, [arr(6, 11, lo=-3, hi=3), rng.integers(0, 11, 6).astype(np.int64)])
case("cross_entropy_soft", lambda x, t: -(t * F.log_softmax(x, -1)).sum(-1).mean(),
     [arr(6, 11, lo=-3, hi=3), np.abs(arr(6, 11))])
case("layer_norm", lambda x, w, b: F.layer_norm(x, (192,), w, b, eps=1e-6), [arr(4, 7, 192), arr(192), arr(192)])
case("l2_normalize", lambda x: F.normalize(x, dim=-1), [arr(5, 17)])
case("linear", F.linear, [arr(3, 5, 9), arr(7, 9), arr(7)])
case("matmul", torch.matmul, [arr(2, 5, 7), arr(2, 7, 3)])
case("conv2d_s2", lambda x, w, b: nhwc(F.conv2d(nchw(x), oihw(w), b, stride=2, padding=1)),
     [arr(2, 9, 11, 5), arr(6, 3, 3, 5), arr(6)])
case("conv2d_groups", lambda x, w: nhwc(F.conv2d(nchw(x), oihw(w), None, stride=1, padding=2, dilation=2, groups=2)),
     [arr(2, 8, 7, 4), arr(6, 3, 3, 2)])
case("depthwise", lambda x, w, b: nhwc(F.conv2d(nchw(x), oihw(w), b, stride=2, padding=1, groups=6)),
     [arr(2, 9, 11, 6), arr(6, 3, 3, 1), arr(6)])
case("batch_norm_train", lambda x, w, b: nhwc(F.batch_norm(nchw(x), None, None, w, b, training=True, eps=1e-5)),
     [arr(4, 5, 5, 6, lo=-2, hi=3), arr(6), arr(6)])
case("max_pool", lambda x: nhwc(F.max_pool2d(nchw(x), 3, 2, 1)), [arr(2, 9, 8, 3)])
case("global_avg_pool", lambda x: x.mean(dim=(1, 2)), [arr(2, 5, 7, 3)])

save(sys.argv[1], tensors, {"torch": torch.__version__})
