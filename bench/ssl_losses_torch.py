#!/usr/bin/env python3
"""bench/bench_ssl_losses.cpp's rows against PyTorch: the same shapes, work and device, measured in the same run.

Runs `BIN --csv --cpu-only` (or `--gpu-only`), then times each row's work in float32 PyTorch as its users write it,
after the methods' code (tests/parity/ssl_losses_parity.py's formulas): DINO's DINOLoss (teacher softmax, loops over
crop pairs, SSLight's λ, the batch centre), SwAV's swapped prediction and distributed_sinkhorn, MoCo's logits (matmul
with the queue) + F.cross_entropy, the EMA as torch._foreach_mul_ / _foreach_add_ over the row's parameter list. fwd
under no_grad; fwd+bwd adds autograd's backward to the student logits / queries. Median of --repeats after --warmup
(CUDA: events, TF32 off as in sslight's f32). First, each formula is checked once in float64 on a tiny input against
an independent plain-Python loop (loss and gradient; Sinkhorn's codes; the EMA): the binary prints no loss values.
Prints speedup = PyTorch µs / sslight µs (> 1: sslight faster) and both rates with the C++ row's byte / flop count.
Threads: OMP_NUM_THREADS (default: all cores) for torch and for the binary (OMP_ / OPENBLAS_NUM_THREADS).

    /usr/bin/python3 bench/ssl_losses_torch.py --device cpu [--quick] [--csv] [--bin build/bench/bench_ssl_losses]
"""
import argparse
import csv
import datetime
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    sys.exit(f"ssl_losses_torch.py: cannot import torch ({e}); run it with Debian's /usr/bin/python3 "
             "(apt-get install python3-torch) or a python3 that has PyTorch")


# ---- the formulas as the methods' code writes them (float32 in the timings) ----

def dino_loss(student_output, teacher_output, center, ncrops, lambdas=(0.4, 0.6), student_temp=0.1, teacher_temp=0.04):
    """DINO's DINOLoss.forward with SSLight's λ weighting; returns the loss and the batch centre (update_center)."""
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach().chunk(2)
    gg, gl = [], []
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v != iq:
                (gg if v < 2 else gl).append(torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean())
    batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
    return lambdas[0] * sum(gg) / len(gg) + lambdas[1] * sum(gl) / len(gl), batch_center


def swav_loss(output, codes, ncrops, bs, lambdas=(0.4, 0.6), temperature=0.1):
    """SwAV's swapped prediction: the codes of crop a predicted from every other crop v, λ-weighted."""
    gg, gl = [], []
    for crop_id, q in enumerate(codes):
        for v in range(ncrops):
            if v != crop_id:
                x = output[bs * v: bs * (v + 1)] / temperature
                (gg if v < 2 else gl).append(-torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1)))
    return lambdas[0] * sum(gg) / len(gg) + lambdas[1] * sum(gl) / len(gl)


@torch.no_grad()
def distributed_sinkhorn(out, epsilon=0.05, sinkhorn_iterations=3):
    """SwAV's distributed_sinkhorn in one process."""
    Q = torch.exp(out / epsilon).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(sinkhorn_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def infonce_loss(q, k, queue, temp=0.2):
    """MoCo's logits [q·k, q·queueᵀ] / T (queue [Kq, D], sslight's layout) and cross-entropy with label 0."""
    logits = torch.cat([torch.sum(q * k, dim=1, keepdim=True), q @ queue.t()], dim=1) / temp
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@torch.no_grad()
def ema(teacher, student, m=0.996):
    torch._foreach_mul_(teacher, m)
    torch._foreach_add_(teacher, student, alpha=1 - m)


# ---- independent plain-Python loops (tiny shapes) for the correctness guard ----

def softmax_list(row):
    mx = max(row)
    e = [math.exp(x - mx) for x in row]
    z = sum(e)
    return [x / z for x in e]


def pair_loss_loop(S, targets, V, B, lgg, lgl, temp):
    """Σ over (target crop a, student crop v != a) of w·mean_b −Σ_k t log softmax(s/τ); the loss and dL/dS."""
    G, K = len(targets) // B, len(S[0])
    loss, grad = 0.0, [[0.0] * K for _ in S]
    for a in range(G):
        for v in range(V):
            if v == a:
                continue
            w = (lgg / (G * (G - 1)) if v < G else lgl / (G * (V - G))) / B
            for b in range(B):
                t, p = targets[a * B + b], softmax_list([x / temp for x in S[v * B + b]])
                loss -= w * sum(t[j] * math.log(p[j]) for j in range(K))
                for j in range(K):  # d/ds of −Σ t log softmax(s/τ) = (softmax(s/τ)·Σt − t)/τ
                    grad[v * B + b][j] += w * (p[j] * sum(t) - t[j]) / temp
    return loss, grad


def sinkhorn_loop(scores, eps=0.05, iters=3):
    R, K = len(scores), len(scores[0])
    Q = [[math.exp(scores[r][j] / eps) for r in range(R)] for j in range(K)]  # [K][R]
    total = sum(map(sum, Q))
    Q = [[x / total for x in row] for row in Q]
    for _ in range(iters):
        Q = [[x / (sum(row) * K) for x in row] for row in Q]
        col = [sum(Q[j][r] for j in range(K)) for r in range(R)]
        Q = [[Q[j][r] / (col[r] * R) for r in range(R)] for j in range(K)]
    return [[Q[j][r] * R for j in range(K)] for r in range(R)]


def infonce_loop(q, k, queue, temp):
    B, D = len(q), len(q[0])
    dot = lambda x, y: sum(x[i] * y[i] for i in range(D))  # noqa: E731
    loss, grad = 0.0, []
    for b in range(B):
        keys = [k[b]] + queue
        p = softmax_list([dot(q[b], x) / temp for x in keys])
        loss -= math.log(p[0]) / B
        grad.append([(sum(p[j] * keys[j][i] for j in range(len(keys))) - k[b][i]) / temp / B for i in range(D)])
    return loss, grad


def check_formulas(dev):
    """Each timed formula against its loop on a tiny float64 input; exits naming those that disagree."""
    g = torch.Generator().manual_seed(2210)
    r = lambda *s, lo=-1.0, hi=1.0: (lo + (hi - lo) * torch.rand(*s, generator=g, dtype=torch.float64)).to(dev)  # noqa
    close = lambda a, b: torch.allclose(torch.as_tensor(a, dtype=torch.float64).cpu(),  # noqa: E731
                                        torch.as_tensor(b, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    same = lambda got, want: close(got[0], want[0]) and close(got[1], want[1])  # noqa: E731 (loss, grad) pairs

    def value_grad(leaf, loss):
        leaf.grad = None
        L = loss()
        L.backward()
        return L.item(), leaf.grad
    B, K, V = 3, 5, 5
    s, t, c = r(V * B, K, lo=-2, hi=2).requires_grad_(), r(2 * B, K, lo=-0.3, hi=0.3), r(K, lo=-0.05, hi=0.05)
    P = [softmax_list([(x - ck) / 0.04 for x, ck in zip(row, c.tolist())]) for row in t.tolist()]
    scores = r(4 * B, K)
    codes = [distributed_sinkhorn(scores[:2 * B])[:B], distributed_sinkhorn(scores[2 * B:])[:B]]
    q, k, queue = [F.normalize(r(n, 4), dim=1) for n in (B, B, 7)]
    q.requires_grad_()
    tt, ss = [r(n) for n in (3, 17, 1)], [r(n) for n in (3, 17, 1)]
    ema_ref = [[0.996 * a + (1 - 0.996) * b for a, b in zip(x.tolist(), y.tolist())] for x, y in zip(tt, ss)]
    ema(tt, ss)
    ok = {"dino": same(value_grad(s, lambda: dino_loss(s, t, c, V)[0]), pair_loss_loop(s.tolist(), P, V, B, .4, .6, .1))
          and close(dino_loss(s, t, c, V)[1][0], [sum(col) / len(col) for col in zip(*t.tolist())]),
          "sinkhorn": close(distributed_sinkhorn(scores), sinkhorn_loop(scores.tolist())),
          "swav": same(value_grad(s, lambda: swav_loss(s, codes, V, B)),
                       pair_loss_loop(s.tolist(), codes[0].tolist() + codes[1].tolist(), V, B, .4, .6, .1)),
          "infonce": same(value_grad(q, lambda: infonce_loss(q, k, queue)),
                          infonce_loop(q.tolist(), k.tolist(), queue.tolist(), 0.2)),
          "ema": all(close(x, w) for x, w in zip(tt, ema_ref))}
    if not all(ok.values()):
        sys.exit("ssl_losses_torch.py: the PyTorch formula(s) " + ", ".join(n for n in ok if not ok[n]) +
                 " disagree with the plain-loop reference")


# ---- the rows ----

def vit_tiny_dino():
    """bench_ssl_losses.cpp's vit_tiny_dino(): numels of ViT-Tiny/16 + the DINO head (K = 65536), 158 tensors."""
    n = [192 * 3 * 16 * 16, 192, 192, 197 * 192]
    for _ in range(12):
        n += [192, 192, 576 * 192, 576, 192 * 192, 192, 192, 192, 768 * 192, 768, 192 * 768, 192]
    return n + [192, 192, 2048 * 192, 2048, 2048 * 2048, 2048, 256 * 2048, 256, 65536, 65536 * 256]


PARAM_LISTS = {"vit_tiny+dino": vit_tiny_dino}
SHAPES = {"dino fwd": r"B(\d+) K(\d+) 2\+(\d+)", "dino fwd+bwd": r"B(\d+) K(\d+) 2\+(\d+)",
          "swav fwd+bwd": r"B(\d+) K(\d+) 2\+(\d+)", "sinkhorn": r"B(\d+) K(\d+)",
          "infonce fwd+bwd": r"B(\d+) queue(\d+)x(\d+)", "ema": r"(\S+) (\d+)t"}


def backward_of(leaf, loss):
    """fwd+bwd: the loss and autograd's backward to `leaf` (its grad set to None first, as zero_grad does)."""
    def fn():
        leaf.grad = None
        loss().backward()
    return fn


def row_match(op, shape):
    m = re.fullmatch(SHAPES[op], shape) if op in SHAPES else None
    if m is None:
        sys.exit(f"ssl_losses_torch.py: unknown row '{op}' / '{shape}' from the binary: teach make_work() this row")
    if op == "ema" and (m[1] not in PARAM_LISTS or len(PARAM_LISTS[m[1]]()) != int(m[2])):
        sys.exit(f"ssl_losses_torch.py: EMA row '{shape}': no parameter list '{m[1]}' with {m[2]} tensors here")
    return m


def make_work(op, shape, dev):
    """The PyTorch closure timed for one C++ row (same shapes, value ranges as the C++ row's rand × scale)."""
    m = row_match(op, shape)
    rand = lambda *s, scale=1.0: torch.rand(*s, device=dev) * scale  # noqa: E731
    if op.startswith("dino"):
        B, K, V = int(m[1]), int(m[2]), 2 + int(m[3])
        s, t, c = rand(V * B, K, scale=4.0).requires_grad_(), rand(2 * B, K), rand(K, scale=0.1)
        if op == "dino fwd":
            return torch.no_grad()(lambda: dino_loss(s, t, c, V))
        return backward_of(s, lambda: dino_loss(s, t, c, V)[0])
    if op == "swav fwd+bwd":
        B, K, V = int(m[1]), int(m[2]), 2 + int(m[3])
        s = rand(V * B, K, scale=2.0).requires_grad_()
        codes = [distributed_sinkhorn(rand(B, K, scale=2.0) - 1.0) for _ in range(2)]  # C++: B + queue rows; untimed
        return backward_of(s, lambda: swav_loss(s, codes, V, B))
    if op == "sinkhorn":
        scores = rand(int(m[1]), int(m[2]), scale=2.0) - 1.0
        return lambda: distributed_sinkhorn(scores)
    if op == "infonce fwd+bwd":
        B, Kq, D = int(m[1]), int(m[2]), int(m[3])
        q = F.normalize(rand(B, D) - 0.5, dim=1).requires_grad_()
        k, queue = F.normalize(rand(B, D) - 0.5, dim=1), F.normalize(rand(Kq, D) - 0.5, dim=1)
        return backward_of(q, lambda: infonce_loss(q, k, queue))
    teacher = [rand(n) for n in PARAM_LISTS[m[1]]()]
    student = [rand(n) for n in PARAM_LISTS[m[1]]()]
    return lambda: ema(teacher, student)


def time_median(fn, dev, warmup, repeats):
    """Median seconds of `repeats` calls after `warmup` calls (CUDA: events around each call, then a sync)."""
    for _ in range(warmup):
        fn()
    if dev.type != "cuda":
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for a, b in events:  # synchronised after each repeat, as the C++ harness does
        a.record()
        fn()
        b.record()
        b.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e-3 for a, b in events)


def run_binary(path, device, threads):
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        sys.exit(f"ssl_losses_torch.py: no sslight bench binary at {path}; build it with "
                 "`cmake --build build --target bench_ssl_losses` (or pass --bin)")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    flag = "--cpu-only" if device == "cpu" else "--gpu-only"
    p = subprocess.run([path, "--csv", flag], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"ssl_losses_torch.py: {path} --csv {flag} failed (exit {p.returncode}):\n{p.stderr}{p.stdout}")
    rows = list(csv.DictReader(p.stdout[p.stdout.find("op,shape,"):].splitlines()))
    if not rows:
        sys.exit(f"ssl_losses_torch.py: {path} printed no {device} rows (a build without CUDA, or no GPU?)\n{p.stdout}")
    side = "cpu" if device == "cpu" else "gpu"
    for r in rows:  # every row known before anything is timed
        if not r["op"].startswith(side + " "):
            sys.exit(f"ssl_losses_torch.py: row '{r['op']}' from {path} is not a {side} row")
        row_match(r["op"][4:], r["shape"])
    return rows


def machine(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bench/bench_ssl_losses", help="the sslight bench_ssl_losses binary")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 3 repeats (checks)")
    ap.add_argument("--csv", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.repeats = 1, 3
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("ssl_losses_torch.py: --device cuda but this PyTorch sees no GPU")
    dev = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    check_formulas(dev)
    rows = run_binary(args.bin, args.device, threads)
    out = []
    for r in rows:
        op = r["op"][4:]
        t_us = 1e6 * time_median(make_work(op, r["shape"], dev), dev, args.warmup, args.repeats)
        us, rate = float(r["us"]), float(r["rate"])
        out.append((r["op"], r["shape"], us, t_us, t_us / us, rate, rate * us / t_us, r["unit"]))
    own = "1 + 3" if args.device == "cpu" else "3 + 10"  # bench_ssl_losses.cpp's warm-up + repeats
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} {socket.gethostname()}: {machine(dev)}, "
          f"torch {torch.__version__}, threads {threads}, {args.device}; PyTorch: median of {args.repeats} after "
          f"{args.warmup} warm-up, sslight: {own}")
    if args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["op", "shape", "sslight_us", "torch_us", "speedup", "sslight_rate", "torch_rate", "unit"])
        for o in out:
            w.writerow([o[0], o[1], f"{o[2]:.2f}", f"{o[3]:.2f}", f"{o[4]:.3f}", f"{o[5]:.2f}", f"{o[6]:.2f}", o[7]])
        return
    print(f"{'op':<20} {'shape':<22} {'sslight us':>11} {'PyTorch us':>11} {'speedup':>8} {'sslight':>13} "
          f"{'PyTorch':>13}")
    for o in out:
        print(f"{o[0]:<20} {o[1]:<22} {o[2]:>11.1f} {o[3]:>11.1f} {o[4]:>7.2f}x {o[5]:>8.2f} {o[7]:<4} "
              f"{o[6]:>8.2f} {o[7]:<4}")
    print("(speedup = PyTorch us / sslight us: > 1 means sslight is faster; rates use the C++ row's byte / flop count)")


if __name__ == "__main__":
    main()
