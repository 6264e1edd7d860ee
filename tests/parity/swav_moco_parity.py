#!/usr/bin/python3
"""Plain-PyTorch SwAV and MoCo-v2 steps for sslight's parity test (tests/test_parity_swav_moco.cpp).

IN holds one or more cases, every key prefixed "<case>." ("swav..." or "moco..." cases): the model's state (torch
names and OIHW layout: torchvision mobilenet_v2 under "backbone." / "encoder_q.backbone." / "encoder_k.backbone."),
the views (NHWC f32: "globals" [2B,S,S,3], "locals" [N*B,s,s,3]) and scalars (sslight, epoch, lr, weight_decay;
SwAV: queue_length, queue_start; MoCo: momentum, temperature). SwAV may carry "queue" [2, L, D] (a queue already
running), else the queue starts empty as SwAV's main loop makes it. Each step is written from the public code of
SwAV (main_swav.py: prototype normalisation, queue, distributed_sinkhorn, prototype gradients dropped) and MoCo
(moco/builder.py: _momentum_update_key_encoder before the keys, queue [dim, K], _dequeue_and_enqueue) with the
SSLight code's λ re-weighting (baseline = the plain mean over pairs), then one LARS step (DINO's LARS with the
SPEC §5 groups). Everything runs in float64 (the f32 state, views and queues are widened exactly, as sslight does).
Writes OUT (same prefixes): loss, codes / keys / logits, probe gradients, the state after the step.
Usage: swav_moco_parity.py IN OUT
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from methods_parity import load
from write_safetensors import save

SWAV_PROBES = ["backbone.features.0.0.weight", "backbone.features.2.conv.1.0.weight", "backbone.features.18.1.weight",
               "projection_head.0.weight", "projection_head.1.weight", "projection_head.3.weight",
               "projection_head.3.bias", "prototypes.weight"]
MOCO_PROBES = ["backbone.features.0.0.weight", "backbone.features.2.conv.1.0.weight", "backbone.features.18.1.weight",
               "head.0.weight", "head.2.weight", "head.2.bias"]


def mobilenet_v2():  # the backbone as SSLight's BACKBONE: features, global average pool, flatten
    m = torchvision.models.mobilenet_v2()
    m.classifier = nn.Identity()
    return m


class SwAV(nn.Module):  # SSLight's SWAV: MultiCropWrapper(backbone, SWAVHead(nlayers 2, BN, l2norm))
    def __init__(self, hidden, dim, n_prototypes):
        super().__init__()
        self.backbone = mobilenet_v2()
        self.projection_head = nn.Sequential(nn.Linear(1280, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                             nn.Linear(hidden, dim))
        self.prototypes = nn.Linear(dim, n_prototypes, bias=False)

    def forward(self, groups):  # one backbone pass per resolution group, the head once
        x = F.normalize(self.projection_head(torch.cat([self.backbone(g) for g in groups])), dim=1, p=2)
        return x, self.prototypes(x)


class MoCoEncoder(nn.Module):  # backbone + MOCOHead(nlayers 2, no BN)
    def __init__(self, hidden, dim):
        super().__init__()
        self.backbone = mobilenet_v2()
        self.head = nn.Sequential(nn.Linear(1280, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, groups):
        return self.head(torch.cat([self.backbone(g) for g in groups]))


def lars_step(named_params, lr, weight_decay, eta=0.001, momentum=0.9):
    """DINO's LARS on a fresh state (mu = 0.9·0 + d), groups per SPEC §5: 1-D parameters and biases get neither
    weight decay nor the trust ratio; depthwise weights ([C, 1, k, k]) no weight decay."""
    for name, p in named_params:
        if p.grad is None:
            continue
        no_decay = p.ndim == 1 or name.endswith(".bias")
        depthwise = p.ndim == 4 and p.shape[1] == 1
        d = p.grad if no_decay or depthwise else p.grad.add(p, alpha=weight_decay)
        if not no_decay:
            pn, dn = torch.norm(p), torch.norm(d)
            if pn > 0 and dn > 0:
                d = d * (eta * pn / dn)
        mu = torch.zeros_like(p).mul_(momentum).add_(d)
        p.data.add_(mu, alpha=-lr)


def views(inp):  # NHWC f32 -> NCHW f64
    return [inp[k].permute(0, 3, 1, 2).double().contiguous() for k in ("globals", "locals")]


def lambdas(sc, n_local):  # SSLight (0.4, 0.6); baseline: the plain average over view pairs
    return (0.4, 0.6) if sc["sslight"] else (1.0 / (1 + n_local), n_local / (1.0 + n_local))


@torch.no_grad()
def distributed_sinkhorn(out, epsilon=0.05, sinkhorn_iterations=3, world_size=1):  # SwAV's, one process
    Q = torch.exp(out / epsilon).t()
    B = Q.shape[1] * world_size
    K = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(sinkhorn_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def swav_loss(model, output, embedding, bs, queue, n_crops, lam, out, tag):  # SSLight's SWAVLoss.forward
    g_loss, l_loss, n_g, n_l = 0.0, 0.0, 0, 0
    use_the_queue = False
    for i, crop_id in enumerate([0, 1]):
        with torch.no_grad():
            o = output[bs * crop_id: bs * (crop_id + 1)].detach()
            if queue is not None:
                if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                    use_the_queue = True
                    o = torch.cat((torch.mm(queue[i], model.prototypes.weight.t()), o))
                queue[i, bs:] = queue[i, :-bs].clone()
                queue[i, :bs] = embedding[crop_id * bs: (crop_id + 1) * bs]
            q = distributed_sinkhorn(o)[-bs:]
        out[f"{tag}.codes.{i}"] = q.numpy().copy()
        for v in np.delete(np.arange(n_crops), crop_id):
            x = output[bs * v: bs * (v + 1)] / 0.1
            term = -torch.sum(q * F.log_softmax(x, dim=1), dim=1).mean()
            if v < 2:
                g_loss, n_g = g_loss + term, n_g + 1
            else:
                l_loss, n_l = l_loss + term, n_l + 1
    out[f"{tag}.use_the_queue"] = np.array(float(use_the_queue))
    return lam[0] * g_loss / n_g + lam[1] * l_loss / n_l


def swav_case(inp, sc, tag, out):
    state = {k[6:]: v for k, v in inp.items() if k.startswith("state.")}
    n_proto, dim = state["prototypes.weight"].shape
    model = SwAV(state["projection_head.0.weight"].shape[0], dim, n_proto)
    model.load_state_dict(state, strict=True)
    model.double()
    g, loc = views(inp)
    bs = g.shape[0] // 2
    n_local = loc.shape[0] // bs
    queue_length = int(sc["queue_length"])
    queue_length -= queue_length % bs
    queue = inp["queue"].double() if "queue" in inp else None
    if queue is None and queue_length > 0 and sc["epoch"] >= sc["queue_start"]:
        queue = torch.zeros(2, queue_length, dim, dtype=torch.float64)
    with torch.no_grad():  # normalize the prototypes
        model.prototypes.weight.copy_(F.normalize(model.prototypes.weight.data.clone(), dim=1, p=2))
    embedding, output = model([g, loc])
    loss = swav_loss(model, output, embedding.detach(), bs, queue, 2 + n_local, lambdas(sc, n_local), out, tag)
    loss.backward()
    params = dict(model.named_parameters())
    out[tag + ".loss"] = loss.detach().double().numpy()
    for name in SWAV_PROBES:
        out[f"{tag}.grad.{name}"] = params[name].grad.numpy().copy()
    if sc["epoch"] < 1:  # cancel gradients for the prototypes
        model.prototypes.weight.grad = None
    with torch.no_grad():
        lars_step(model.named_parameters(), sc["lr"], sc["weight_decay"])
        model.prototypes.weight.copy_(F.normalize(model.prototypes.weight.data.clone(), dim=1, p=2))
    for name in SWAV_PROBES:
        out[f"{tag}.after.{name}"] = params[name].detach().numpy().copy()
    buffers = dict(model.named_buffers())
    for name in ["backbone.features.0.1.running_mean", "projection_head.1.running_var"]:
        out[f"{tag}.after.{name}"] = buffers[name].numpy().copy()
    if queue is not None:
        out[tag + ".queue"] = queue.numpy()


def moco_case(inp, sc, tag, out):
    state = {k[6:]: v for k, v in inp.items() if k.startswith("state.")}
    hidden, dim = state["encoder_q.head.0.weight"].shape[0], state["encoder_q.head.2.weight"].shape[0]
    encoder_q, encoder_k = MoCoEncoder(hidden, dim), MoCoEncoder(hidden, dim)
    for prefix, enc in (("encoder_q.", encoder_q), ("encoder_k.", encoder_k)):
        enc.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        enc.double()
    for p in encoder_k.parameters():
        p.requires_grad = False
    queue = state["queue"].t().double().contiguous()  # MoCo's layout [dim, K]
    ptr, K = int(state["queue_ptr"]), queue.shape[1]
    m, T = sc["momentum"], sc["temperature"]
    g, loc = views(inp)
    bs = g.shape[0] // 2
    n_local = loc.shape[0] // bs
    q = F.normalize(encoder_q([g[bs:], loc]), dim=-1)  # queries: g2 and the locals
    with torch.no_grad():
        for param_q, param_k in zip(encoder_q.parameters(), encoder_k.parameters()):
            param_k.data = param_k.data * m + param_q.data * (1. - m)
        k = F.normalize(encoder_k([g[:bs]]), dim=-1)  # keys: g1
    l_pos = torch.cat([torch.einsum("nc,nc->n", [u, k]).unsqueeze(-1) for u in q.chunk(1 + n_local)], dim=0)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    ce = [F.cross_entropy(x, torch.zeros(bs, dtype=torch.long)) for x in logits.chunk(1 + n_local)]
    lgg, lgl = lambdas(sc, n_local)
    loss = lgg * ce[0] + lgl * sum(ce[1:]) / n_local
    with torch.no_grad():  # _dequeue_and_enqueue
        assert K % bs == 0
        queue[:, ptr:ptr + bs] = k.T
        ptr = (ptr + bs) % K
    loss.backward()
    qparams, kparams = dict(encoder_q.named_parameters()), dict(encoder_k.named_parameters())
    out[tag + ".loss"] = loss.detach().double().numpy()
    out[tag + ".logits"] = logits.detach().numpy()
    out[tag + ".keys"] = k.numpy()
    for name in MOCO_PROBES:
        out[f"{tag}.grad.encoder_q.{name}"] = qparams[name].grad.numpy().copy()
    with torch.no_grad():
        lars_step(encoder_q.named_parameters(), sc["lr"], sc["weight_decay"])
    for name in MOCO_PROBES:
        out[f"{tag}.after.encoder_q.{name}"] = qparams[name].detach().numpy().copy()
        out[f"{tag}.after.encoder_k.{name}"] = kparams[name].detach().numpy().copy()
    out[f"{tag}.after.encoder_k.backbone.features.0.1.running_mean"] = \
        dict(encoder_k.named_buffers())["backbone.features.0.1.running_mean"].numpy().copy()
    out[tag + ".queue"] = queue.t().contiguous().numpy()
    out[tag + ".queue_ptr"] = np.array(float(ptr))


def main():
    torch.set_num_threads(1)
    inp = load(sys.argv[1])
    out = {}
    for tag in sorted({k.split(".", 1)[0] for k in inp}):
        case = {k[len(tag) + 1:]: v for k, v in inp.items() if k.startswith(tag + ".")}
        sc = {k[7:]: float(v) for k, v in case.items() if k.startswith("scalar.")}
        if tag.startswith("swav"):
            swav_case(case, sc, tag, out)
        elif tag.startswith("moco"):
            moco_case(case, sc, tag, out)
        else:
            sys.exit(f"swav_moco_parity.py: case '{tag}' is neither swav* nor moco*")
    save(sys.argv[2], out)


if __name__ == "__main__":
    main()
