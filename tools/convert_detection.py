#!/usr/bin/env python3
"""Converts an sslight backbone export (`sslight export` / models/weights.h save_backbone: safetensors with
torchvision names and OIHW convolutions) into the two standard detection checkpoint formats:
  --torchvision OUT.pth   state dict for torchvision.models.detection: `backbone.body.<torchvision name>`
  --detectron2  OUT.pkl   Detectron2 pickle {"model": {name: ndarray}, "__author__": "sslight",
                          "matching_heuristics": True}, named as Detectron2's tools/convert-torchvision-to-d2.py
A pure renaming: every value is copied bit for bit (bf16 files are widened to f32, exactly). Needs numpy, and
torch for --torchvision only. No sslight installation needed. See tools/README.md.
"""
import argparse
import json
import pickle
import re
import struct
import sys

import numpy as np

RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
                 ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


class ConversionError(Exception):
    pass


def read_safetensors(path):
    """name -> numpy array (F64, F32, BF16 -> F32, I64, I32, U8) and the metadata map."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1", "BF16": "<u2"}
    metadata = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        if info["dtype"] not in dtypes:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.array(a, dtype=a.dtype.newbyteorder("="))
    return out, metadata


def detect_architecture(names):
    """("resnet", depth) or ("mobilenet_v2", None) from the tensor names; ConversionError otherwise."""
    if any(n.startswith("features.") for n in names) and "features.0.0.weight" in names:
        return "mobilenet_v2", None
    if "conv1.weight" in names and any(n.startswith("layer1.") for n in names):
        kind = "bottleneck" if "layer1.0.conv3.weight" in names else "basic"
        blocks = []
        for stage in range(1, 5):
            ids = {int(m.group(1)) for n in names for m in [re.match(rf"layer{stage}\.(\d+)\.", n)] if m}
            blocks.append(len(ids))
        depth = RESNET_DEPTHS.get((kind, tuple(blocks)))
        if depth is None:
            raise ConversionError(f"ResNet with {kind} blocks {blocks} is not a torchvision ResNet depth")
        return "resnet", depth
    if any(n.startswith("blocks.") or n == "cls_token" for n in names):
        raise ConversionError("ViT backbones have no torchvision/Detectron2 Mask R-CNN FPN counterpart here "
                              "(use a ViTDet-style adapter); only ResNet and MobileNetV2 are converted")
    raise ConversionError("not an sslight ResNet or MobileNetV2 backbone export (no conv1/layer1 or features.*)")


def backbone_tensors(state):
    """The export minus any classifier (sslight exports none; torchvision checkpoints have one)."""
    return {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}


def torchvision_names(state, arch, mobilenet_layout="fpn"):
    """sslight/torchvision classification name -> torchvision detection model name."""
    if arch == "resnet":
        return {k: "backbone.body." + k for k in state}
    if mobilenet_layout == "fpn":  # backbone_utils._mobilenet_extractor(fpn=True): IntermediateLayerGetter
        return {k: "backbone.body." + k[len("features."):] for k in state}
    return {k: "backbone.0." + k[len("features."):] for k in state}  # fpn=False: Sequential(features, conv)


def detectron2_name(name):
    """torchvision ResNet name -> Detectron2 ResNet name (the rules of convert-torchvision-to-d2.py)."""
    if not name.startswith("layer"):
        name = "stem." + name
    for t in (1, 2, 3, 4):
        name = name.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        name = name.replace(f"bn{t}", f"conv{t}.norm")
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_torchvision(state, arch, mobilenet_layout="fpn"):
    import torch
    names = torchvision_names(state, arch, mobilenet_layout)
    return {names[k]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def to_detectron2(state, arch):
    """Detectron2 has no built-in MobileNetV2, and its BN layers keep no num_batches_tracked: both refused /
    dropped (SyncBN initialises the counter; FrozenBN has none)."""
    if arch != "resnet":
        raise ConversionError("Detectron2 has no built-in MobileNetV2 backbone: convert with --torchvision")
    model = {detectron2_name(k): np.ascontiguousarray(v) for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "sslight", "matching_heuristics": True}


def convert(src, torchvision_out=None, detectron2_out=None, mobilenet_layout="fpn"):
    """Reads `src`, writes the requested outputs; returns a summary dict."""
    state, metadata = read_safetensors(src)
    if metadata.get("layout", "OIHW") != "OIHW":
        raise ConversionError(f"{src}: layout {metadata['layout']} (expected OIHW as sslight export writes)")
    state = backbone_tensors(state)
    arch, depth = detect_architecture(set(state))
    summary = {"source": src, "arch": f"resnet{depth}" if arch == "resnet" else arch, "tensors": len(state)}
    if torchvision_out:
        import torch
        tv = to_torchvision(state, arch, mobilenet_layout)
        torch.save(tv, torchvision_out)
        summary["torchvision"] = {"path": torchvision_out, "keys": len(tv)}
    if detectron2_out:
        d2 = to_detectron2(state, arch)
        with open(detectron2_out, "wb") as f:
            pickle.dump(d2, f)
        summary["detectron2"] = {"path": detectron2_out, "keys": len(d2["model"])}
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbone", help="safetensors file written by `sslight export` (or save_backbone)")
    p.add_argument("--torchvision", metavar="OUT.pth", help="torchvision detection state dict (torch.save)")
    p.add_argument("--detectron2", metavar="OUT.pkl", help="Detectron2 weights pickle (ResNets only)")
    p.add_argument("--mobilenet-layout", choices=("fpn", "plain"), default="fpn",
                   help="MobileNetV2 torchvision layout: mobilenet_backbone(fpn=True) (default) or fpn=False")
    args = p.parse_args(argv)
    if not args.torchvision and not args.detectron2:
        p.error("nothing to write: give --torchvision and/or --detectron2")
    try:
        summary = convert(args.backbone, args.torchvision, args.detectron2, args.mobilenet_layout)
    except (ConversionError, OSError, ValueError, KeyError) as e:
        print(f"convert_detection: error: {e}", file=sys.stderr)
        return 1
    print("convert_detection: " + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
