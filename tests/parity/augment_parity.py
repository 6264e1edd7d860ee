#!/usr/bin/python3
"""torchvision reference for sslight's photometric augmentation (tests/test_parity_augment.cpp).

For random uint8 images and fixed parameters (each op alone, and the full chain in fixed jitter orders), the
output of torchvision.transforms.functional on float tensors in [0, 1] (the tensor path: no rounding to
uint8 between ops, unlike the PIL path of the original training code), in the order hflip, the jitter ops,
rgb_to_grayscale(3 channels), gaussian_blur(kernel 2 ceil(3 sigma) + 1), solarize(128/255), normalize
(ImageNet). Written to one safetensors file as <case>.in (B, H, W, 3) u8, <case>.params (B, 14) f64 and
<case>.out (B, H, W, 3) f32. Params per image: flip, jitter_apply, gray, blur, solarize, brightness,
contrast, saturation, hue, order[0..3], sigma; every float is exactly representable in float32.
Usage: augment_parity.py OUT.safetensors
"""
import math
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F

from write_safetensors import save

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
rng = np.random.default_rng(2210)
tensors = {}


def f32(x):
    return float(np.float32(x))


def params(flip=0, order=None, b=1.0, c=1.0, s=1.0, h=0.0, gray=0, sigma=0.0, solarize=0):
    jitter = int(order is not None)
    order = order if order is not None else [0, 1, 2, 3]
    return [flip, jitter, gray, int(sigma > 0), solarize, f32(b), f32(c), f32(s), f32(h)] + list(order) + [f32(sigma)]


def augment(img, p):
    flip, jitter, gray, blur, solarize, b, c, s, h = p[:9]
    order, sigma = p[9:13], p[13]
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    if flip:
        x = F.hflip(x)
    if jitter:
        for op in order:
            if op == 0 and b != 1.0:
                x = F.adjust_brightness(x, b)
            elif op == 1 and c != 1.0:
                x = F.adjust_contrast(x, c)
            elif op == 2 and s != 1.0:
                x = F.adjust_saturation(x, s)
            elif op == 3 and h != 0.0:
                x = F.adjust_hue(x, h)
    if gray:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    if blur:
        k = 2 * math.ceil(3 * sigma) + 1
        x = F.gaussian_blur(x, [k, k], [sigma, sigma])
    if solarize:
        x = F.solarize(x, 128.0 / 255.0)
    x = F.normalize(x, MEAN, STD)
    return x.permute(1, 2, 0).contiguous().numpy()


def images(B, H, W):
    x = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    grey = rng.random((B, H, W)) < 0.1  # some r = g = b pixels (hue's maxc == minc branch)
    x[grey] = x[grey][:, :1]
    return x


def case(name, plist, H=37, W=45):
    img = images(len(plist), H, W)
    tensors[f"{name}.in"] = img
    tensors[f"{name}.params"] = np.array(plist, dtype=np.float64)
    tensors[f"{name}.out"] = np.stack([augment(img[i], p) for i, p in enumerate(plist)]).astype(np.float32)


J = [0, 1, 2, 3]
case("normalize", [params(), params()])
case("flip", [params(flip=1), params(flip=1)])
case("brightness", [params(order=J, b=0.63), params(order=J, b=1.37)])
case("contrast", [params(order=J, c=0.61), params(order=J, c=1.4)])
case("saturation", [params(order=J, s=0.0), params(order=J, s=1.6)])
case("hue", [params(order=J, h=-0.1), params(order=J, h=0.17)])
case("grayscale", [params(gray=1), params(gray=1)])
case("blur", [params(sigma=0.45), params(sigma=1.9)])
case("solarize", [params(solarize=1), params(solarize=1)])
full = dict(b=1.25, c=0.7, s=1.35, h=0.06)
case("chain_a", [params(flip=1, order=[3, 1, 0, 2], sigma=1.3, solarize=1, **full),
                 params(order=[1, 2, 3, 0], sigma=0.8, solarize=1, **full)])
case("chain_b", [params(order=[0, 1, 2, 3], gray=1, sigma=1.1, solarize=1, **full),
                 params(flip=1, order=[2, 3, 0, 1], **full)], H=64, W=64)
save(sys.argv[1], tensors)
