#!/usr/bin/python3
"""Plain-torch ViT reference for sslight's ViT parity test (tests/test_parity_vit.cpp).

timm is not installed, so the model is written here following timm's VisionTransformer exactly as DINO's
vision_transformer.py does (PatchEmbed conv, CLS token, learned pos_embed, pre-norm Blocks with qkv-bias
Attention and a GELU Mlp, LayerNorm eps 1e-6, DINO's interpolate_pos_encoding and get_intermediate_layers).
ViT-Tiny/16 with random weights (fixed seed; biases, norms, cls_token and pos_embed made non-trivial) is saved
as vit_tiny.weights.safetensors (timm names, patch conv OIHW, f32). vit_tiny.ref.safetensors holds:
  interp.<H>x<W>        the position embedding (f64) as interpolate_pos_encoding returns it for an HxW image
  <px>.<f32|f64>.<what> per case: NHWC input, features (final-norm CLS), probe (CLS of the last 4 blocks,
                        each through the final norm, concatenated), their upstream gradients gout_features /
                        gout_probe, and the gradients of sum(gout_features*features) + sum(gout_probe*probe)
                        w.r.t. the input (NHWC) and a few parameters (grad.<name>, OIHW for the conv).
Usage: vit_parity.py OUT_DIR
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

from write_safetensors import save


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch=16, dim=192, depth=12, heads=3):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        n = (img_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, x, w, h):  # DINO's, verbatim in substance (w, h = x.shape[2], x.shape[3])
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size
        h0 = h // self.patch_embed.patch_size
        w0, h0 = w0 + 0.1, h0 + 0.1
        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
            mode='bicubic',
        )
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def get_intermediate_layers(self, x, n=1):
        x = self.prepare_tokens(x)
        output = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                output.append(self.norm(x))
        return output


PROBES = ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.5.attn.qkv.weight",
          "blocks.11.mlp.fc2.bias", "norm.weight"]
CASES = [(224, torch.float32), (96, torch.float32), (96, torch.float64)]
INTERP_SIZES = [(224, 224), (128, 128), (96, 96), (96, 128), (224, 96)]
BATCH = 2


def build(seed):
    torch.manual_seed(seed)
    m = VisionTransformer()
    with torch.no_grad():
        # Weights of scale 1/sqrt(fan_in) keep the attention non-uniform and the residual stream O(1); random
        # biases, norm affines, CLS token and a large position embedding make every term of the model matter.
        for name, p in m.named_parameters():
            if name.startswith("patch_embed"):
                continue  # PyTorch's default Conv2d init
            if name in ("cls_token", "pos_embed"):
                p.normal_(0, 0.5)
            elif ".norm" in name or name.startswith("norm"):
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.2, 0.2)
            elif name.endswith("weight"):
                p.normal_(0, p.shape[1] ** -0.5)
            else:
                p.uniform_(-0.1, 0.1)
    return m


def run_case(m, state, px, dtype, gen, out):
    m.to(dtype)
    m.load_state_dict(state)
    m.zero_grad()
    x0 = torch.randn(BATCH, 3, px, px, generator=gen)
    x = x0.clone().to(dtype).requires_grad_()  # .to() of the same dtype would return x0 itself
    feat = m(x)
    probe = torch.cat([t[:, 0] for t in m.get_intermediate_layers(x, 4)], dim=-1)
    gf = torch.randn(feat.shape, generator=gen)
    gp = torch.randn(probe.shape, generator=gen)
    ((feat * gf.to(dtype)).sum() + (probe * gp.to(dtype)).sum()).backward()
    key = f"{px}.{'f64' if dtype == torch.float64 else 'f32'}."
    out[key + "input"] = np.array(x0.permute(0, 2, 3, 1))
    out[key + "features"] = np.array(feat.detach())
    out[key + "probe"] = np.array(probe.detach())
    out[key + "gout_features"] = np.array(gf)
    out[key + "gout_probe"] = np.array(gp)
    out[key + "grad.input"] = np.array(x.grad.permute(0, 2, 3, 1))
    params = dict(m.named_parameters())
    for name in PROBES:
        out[key + "grad." + name] = np.array(params[name].grad)


def main():
    out_dir = sys.argv[1]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    m = build(7)
    state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    save(os.path.join(out_dir, "vit_tiny.weights.safetensors"), {k: np.array(v) for k, v in state.items()},
         {"format": "pt"})
    ref = {}
    m64 = build(7).double()
    for h, w in INTERP_SIZES:
        tokens = torch.zeros(1, 1 + (h // 16) * (w // 16), 192, dtype=torch.float64)
        with torch.no_grad():
            ref[f"interp.{h}x{w}"] = np.array(m64.interpolate_pos_encoding(tokens, h, w))
    gen = torch.Generator().manual_seed(11)
    for px, dtype in CASES:
        run_case(m, state, px, dtype, gen, ref)
    save(os.path.join(out_dir, "vit_tiny.ref.safetensors"), ref)


if __name__ == "__main__":
    main()
