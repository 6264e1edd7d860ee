#!/usr/bin/python3
"""PyTorch reference for sslight's SSL-loss parity test (tests/test_parity_ssl_losses.cpp), float64.

The formulas as the methods' public code writes them: DINO's DINOLoss.forward (teacher softmax with centre and
temperature, loops over iq / v, centre batch mean), SwAV's distributed_sinkhorn (one process) and swapped loss
(queue rows prepended before Sinkhorn, the last B codes kept), MoCo's logits / cross-entropy and momentum
update. Each loss runs with the baseline weighting written exactly as the original code averages (plain mean
over all pairs) and with SSLight's λ re-weighting written plainly. Usage: ssl_losses_parity.py OUT.safetensors
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from write_safetensors import save

rng = np.random.default_rng(2210)
out = {}


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def normalized(*shape):
    return F.normalize(t(rng.standard_normal(shape)), dim=-1)


def dino_loss(student_output, teacher_output, center, ncrops, lambdas, student_temp=0.1, teacher_temp=0.04):
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach().chunk(2)
    terms = {"gg": [], "gl": []}
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            terms["gg" if v < 2 else "gl"].append(loss.mean())
    if lambdas is None:  # DINO: total_loss / n_loss_terms
        return sum(terms["gg"] + terms["gl"]) / (len(terms["gg"]) + len(terms["gl"]))
    return lambdas[0] * sum(terms["gg"]) / len(terms["gg"]) + lambdas[1] * sum(terms["gl"]) / len(terms["gl"])


@torch.no_grad()
def distributed_sinkhorn(out, epsilon=0.05, sinkhorn_iterations=3, world_size=1):
    Q = torch.exp(out / epsilon).t()
    B = Q.shape[1] * world_size
    K = Q.shape[0]
    sum_Q = torch.sum(Q)
    Q /= sum_Q
    for _ in range(sinkhorn_iterations):
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def swav_loss(output, codes, ncrops, bs, lambdas, temperature=0.1):
    terms = {"gg": [], "gl": []}
    loss = 0
    for crop_id, q in enumerate(codes):
        subloss = 0
        for v in np.delete(np.arange(ncrops), crop_id):
            x = output[bs * v: bs * (v + 1)] / temperature
            h = -torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
            subloss += h
            terms["gg" if v < 2 else "gl"].append(h)
        loss += subloss / (ncrops - 1)
    if lambdas is None:  # SwAV: mean over crops_for_assign of the per-crop average
        return loss / len(codes)
    return lambdas[0] * sum(terms["gg"]) / len(terms["gg"]) + lambdas[1] * sum(terms["gl"]) / len(terms["gl"])


def dino_case(name, B, K, locals_, lambdas):
    V = 2 + locals_
    student = t(rng.uniform(-2, 2, (V * B, K)), grad=True)
    teacher = t(rng.uniform(-0.3, 0.3, (2 * B, K)))
    center = t(rng.uniform(-0.05, 0.05, (K,)))
    gout = t(rng.uniform(0.5, 1.5, ()))
    loss = dino_loss(student, teacher, center, V, lambdas)
    (grad,) = torch.autograd.grad(loss, student, gout)
    out.update({f"{name}.student": student.detach().numpy(), f"{name}.teacher": teacher.numpy(),
                f"{name}.center": center.numpy(), f"{name}.gout": gout.numpy(),
                f"{name}.loss": loss.detach().numpy(), f"{name}.grad": grad.numpy(),
                f"{name}.teacher_mean": (torch.sum(teacher, dim=0) / len(teacher)).numpy()})


def swav_case(name, B, K, D, locals_, queue_rows, lambdas):
    V = 2 + locals_
    prototypes = normalized(K, D)
    z = normalized(V * B, D)
    scores = (z @ prototypes.t()).detach().requires_grad_()
    queue_scores = normalized(queue_rows, D) @ prototypes.t()
    codes = []
    for crop_id in range(2):
        o = scores[B * crop_id: B * (crop_id + 1)].detach()
        codes.append(distributed_sinkhorn(torch.cat((queue_scores, o)))[-B:])
    gout = t(rng.uniform(0.5, 1.5, ()))
    loss = swav_loss(scores, codes, V, B, lambdas)
    (grad,) = torch.autograd.grad(loss, scores, gout)
    out.update({f"{name}.scores": scores.detach().numpy(), f"{name}.queue_scores": queue_scores.numpy(),
                f"{name}.codes0": codes[0].numpy(), f"{name}.codes1": codes[1].numpy(), f"{name}.gout": gout.numpy(),
                f"{name}.loss": loss.detach().numpy(), f"{name}.grad": grad.numpy()})


def moco_case(name, B, D, Kq, T=0.2, m=0.999):
    q = normalized(B, D).requires_grad_()
    k = normalized(B, D)
    queue = normalized(D, Kq)  # MoCo keeps the queue as (dim, K)
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    loss = F.cross_entropy(logits, labels)
    gout = t(rng.uniform(0.5, 1.5, ()))
    (grad,) = torch.autograd.grad(loss, q, gout)
    param_k, param_q = t(rng.standard_normal((5, 7))), t(rng.standard_normal((5, 7)))
    ema = param_k * m + param_q * (1.0 - m)  # momentum update of the key encoder
    out.update({f"{name}.q": q.detach().numpy(), f"{name}.k": k.numpy(), f"{name}.queue": queue.t().numpy(),
                f"{name}.gout": gout.numpy(), f"{name}.loss": loss.detach().numpy(), f"{name}.grad": grad.numpy(),
                f"{name}.param_k": param_k.numpy(), f"{name}.param_q": param_q.numpy(), f"{name}.ema": ema.numpy()})


dino_case("dino_base", 4, 37, 3, None)
dino_case("dino_sslight", 4, 37, 3, (0.4, 0.6))
swav_case("swav_base", 6, 30, 16, 4, 12, None)
swav_case("swav_sslight", 6, 30, 16, 4, 12, (0.4, 0.6))
moco_case("moco", 7, 16, 50)
save(sys.argv[1], out)
