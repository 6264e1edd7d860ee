#!/usr/bin/env python3
"""Worked example: Mask R-CNN FPN on an sslight backbone with torchvision's detection models, SyncBN and the
1x schedule of configs/detection/torchvision_maskrcnn_1x.py. build_model() makes the network (ResNet18/34/50
or MobileNetV2 body, FPN, 4conv1fc box head and 4-conv mask head, all with BatchNorm that becomes SyncBatchNorm
under DDP) and loads a tools/convert_detection.py --torchvision checkpoint, refusing any backbone key that does
not match. make_optimizer()/lr_at() give SGD and the warmup + multi-step 1x schedule. `--smoke` trains a few
iterations on synthetic images (CPU is fine); for COCO, plug build_model into torchvision's
references/detection/train.py as tools/README.md explains.
"""
import argparse
import os
import runpy

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "..", "configs", "detection", "torchvision_maskrcnn_1x.py")
ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")


def load_config(path=DEFAULT_CONFIG):
    return runpy.run_path(path)


def build_body(arch, norm_layer):
    """Backbone body + FPN (BackboneWithFPN) with every backbone layer trainable."""
    if arch.startswith("resnet"):
        net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer)
        return _resnet_fpn_extractor(net, trainable_layers=5, norm_layer=norm_layer)
    if arch == "mobilenet_v2":
        net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer)
        stages = 2 + sum(getattr(b, "_is_cn", False) for b in net.features)  # as _mobilenet_extractor counts
        return _mobilenet_extractor(net, fpn=True, trainable_layers=stages, norm_layer=norm_layer)
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def build_model(arch, weights=None, cfg=None):
    """Mask R-CNN FPN for `arch`, normalised heads (BatchNorm2d: call to_sync_bn under DDP); `weights` is a
    convert_detection.py --torchvision file. Returns the model (train mode)."""
    cfg = cfg or load_config()
    m = cfg["MODEL"]
    norm = nn.BatchNorm2d if m["norm"] in ("bn", "syncbn") else torchvision.ops.misc.FrozenBatchNorm2d
    backbone = build_body(arch, norm)
    ch = backbone.out_channels
    if arch == "mobilenet_v2":
        a = cfg["MOBILENET_ANCHORS"]
        anchors = AnchorGenerator(a["sizes"], a["aspect_ratios"])
    else:
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    rpn_head = RPNHead(ch, anchors.num_anchors_per_location()[0], conv_depth=m["rpn_conv_depth"])
    box_head = FastRCNNConvFCHead((ch, 7, 7), m["box_head"]["conv_layers"], m["box_head"]["fc_layers"],
                                  norm_layer=nn.BatchNorm2d)
    mask_head = MaskRCNNHeads(ch, m["mask_head"]["layers"], m["mask_head"]["dilation"], norm_layer=nn.BatchNorm2d)
    model = MaskRCNN(backbone, num_classes=m["num_classes"], rpn_anchor_generator=anchors, rpn_head=rpn_head,
                     box_head=box_head, mask_head=mask_head, min_size=m["min_size_train"], max_size=m["max_size"],
                     image_mean=list(m["image_mean"]), image_std=list(m["image_std"]))
    if weights:
        load_backbone_weights(model, torch.load(weights, map_location="cpu"))
    return model


def is_backbone_body_key(name):
    return name.startswith("backbone.body.")


def load_backbone_weights(model, state):
    """load_state_dict(strict=False) that insists every backbone body tensor is matched: missing keys may only
    be FPN / RPN / ROI-head ones and nothing may be unexpected. Returns the missing (head) keys."""
    result = model.load_state_dict(state, strict=False)
    body_missing = [k for k in result.missing_keys if is_backbone_body_key(k)]
    if body_missing or result.unexpected_keys:
        raise RuntimeError(f"backbone keys missing: {body_missing[:8]} ({len(body_missing)}); "
                           f"unexpected: {result.unexpected_keys[:8]} ({len(result.unexpected_keys)})")
    return result.missing_keys


def to_sync_bn(model):
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def make_optimizer(model, cfg):
    s = cfg["SCHEDULE"]
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=s["base_lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])


def lr_at(iteration, cfg, world_images=None):
    """1x schedule: linear warmup from warmup_factor, then x gamma at each step. Linear scaling of the lr with
    the global batch when `world_images` differs from images_per_batch."""
    s = cfg["SCHEDULE"]
    base = s["base_lr"] * (world_images or s["images_per_batch"]) / s["images_per_batch"]
    factor = s["gamma"] ** sum(iteration >= step for step in s["steps"])
    if iteration < s["warmup_iters"]:
        alpha = iteration / s["warmup_iters"]
        factor *= s["warmup_factor"] * (1 - alpha) + alpha
    return base * factor


def synthetic_batch(n, size, generator):
    """Images in [0, 1] with one box and mask each (for --smoke)."""
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size, generator=generator))
        x0, y0 = int(size * 0.2), int(size * 0.25)
        mask = torch.zeros(1, size, size, dtype=torch.uint8)
        mask[0, y0:size - y0, x0:size - x0] = 1
        targets.append({"boxes": torch.tensor([[x0, y0, size - x0, size - y0]], dtype=torch.float32),
                        "labels": torch.tensor([1]), "masks": mask})
    return images, targets


def smoke_train(model, cfg, iterations, size=160):
    """A few SGD steps on synthetic data: shows the loop (losses, schedule) without a dataset. Returns the
    per-iteration total losses."""
    model.transform.min_size, model.transform.max_size = (size,), size
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for it in range(iterations):
        for group in opt.param_groups:
            group["lr"] = lr_at(it, cfg, world_images=2)
        images, targets = synthetic_batch(2, size, gen)
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--weights", help="tools/convert_detection.py --torchvision output")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--smoke", type=int, default=0, metavar="N", help="train N iterations on synthetic images")
    args = p.parse_args()
    cfg = load_config(args.config)
    model = build_model(args.arch, args.weights, cfg)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        model = to_sync_bn(model)
    print(f"built Mask R-CNN FPN on {args.arch}: {sum(p.numel() for p in model.parameters())} parameters")
    if args.smoke:
        for it, loss in enumerate(smoke_train(model, cfg, args.smoke)):
            print(f"iter {it}: loss {loss:.4f}")


if __name__ == "__main__":
    main()
