"""Detection-transfer check (tests/test_parity_detection.cpp): for each sslight backbone export given as
ARCH=EXPORT[=FEATURES] it runs tools/convert_detection.py as a user would, then
- loads the torchvision file into the worked example's Mask R-CNN (tools/train_detection_torchvision.py, BN
  heads) and into torchvision's stock resnet_fpn_backbone / mobilenet_backbone Mask R-CNN (FrozenBN) with
  strict=False: missing keys must all be non-body (FPN, RPN, ROI heads), unexpected keys none, and every body
  tensor (BN running stats and counters included) must equal the export bit for bit;
- re-runs the sslight feature map (FEATURES: input x and forward_map, NHWC) through the converted body;
- checks the Detectron2 pickle: its header, key naming rules, key set, OIHW shapes and exact values;
and checks the Detectron2 yaml configs. Prints one line per backbone and `detection_check: OK <n> backbones`.
"""
import json
import os
import pickle
import re
import struct
import subprocess
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_detection_torchvision as example  # noqa: E402

D2_RULES = [r"stem\.conv1\.weight", r"stem\.conv1\.norm\.(weight|bias|running_mean|running_var)",
            r"res[2-5]\.\d+\.(conv[1-3]|shortcut)\.weight",
            r"res[2-5]\.\d+\.(conv[1-3]|shortcut)\.norm\.(weight|bias|running_mean|running_var)"]


def fail(msg):
    raise AssertionError(msg)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "BF16": "<u2"}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a = np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=dt[v["dtype"]]).reshape(v["shape"])
        a = (a.astype(np.uint32) << 16).view(np.float32) if v["dtype"] == "BF16" else a.astype(dt[v["dtype"]][1:])
        out[k] = torch.from_numpy(a.copy())
    return out


def run_converter(export, workdir, arch):
    tv, d2 = os.path.join(workdir, arch + ".pth"), os.path.join(workdir, arch + ".pkl")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_detection.py"), export, "--torchvision", tv]
    if arch != "mobilenet_v2":
        cmd += ["--detectron2", d2]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
    summary = json.loads(r.stdout.strip().split("convert_detection: ", 1)[1])
    if summary["arch"] != arch:
        fail(f"converter detected {summary['arch']} for a {arch} export")
    return tv, (d2 if arch != "mobilenet_v2" else None)


def stock_model(arch):
    """torchvision's own detection backbones, default FrozenBatchNorm2d, every layer trainable."""
    if arch == "mobilenet_v2":
        body = mobilenet_backbone(backbone_name=arch, weights=None, fpn=True, trainable_layers=6,
                                  norm_layer=FrozenBatchNorm2d)
        anchors = torchvision.models.detection.anchor_utils.AnchorGenerator(((32, 64, 128, 256, 512),) * 3,
                                                                            ((0.5, 1.0, 2.0),) * 3)
        return MaskRCNN(body, num_classes=91, rpn_anchor_generator=anchors)
    body = resnet_fpn_backbone(backbone_name=arch, weights=None, trainable_layers=5, norm_layer=FrozenBatchNorm2d)
    return MaskRCNN(body, num_classes=91)


def check_torchvision_load(model, state, export, arch, what):
    """Every body key matched and equal to the export; returns the number of body tensors compared."""
    result = model.load_state_dict(state, strict=False)
    body_missing = [k for k in result.missing_keys if k.startswith("backbone.body.")]
    if body_missing or result.unexpected_keys:
        fail(f"{arch} {what}: body keys missing {body_missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if not result.missing_keys or not all(k.startswith(("backbone.fpn.", "rpn.", "roi_heads."))
                                          for k in result.missing_keys):
        fail(f"{arch} {what}: unexpected missing-key set {result.missing_keys[:5]}")
    body = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}
    for k, v in body.items():
        src = k.replace("backbone.body.", "" if arch != "mobilenet_v2" else "features.", 1)
        if src not in export:
            fail(f"{arch} {what}: model key {k} ({src}) not in the export")
        if v.shape != export[src].shape or not torch.equal(v.to(export[src].dtype), export[src]):
            fail(f"{arch} {what}: {k} differs from the exported {src}")
    keeps_counters = any(k.endswith("num_batches_tracked") for k in body)  # FrozenBatchNorm2d has none
    wanted = [k for k in export if keeps_counters or not k.endswith("num_batches_tracked")]
    if len(body) != len(wanted):
        fail(f"{arch} {what}: {len(body)} body tensors for {len(wanted)} exported ones")
    return len(body)


def check_features(model, features, arch, tol=1e-4):
    body = model.backbone.body.eval()
    with torch.no_grad():
        out = list(body(features["x"].permute(0, 3, 1, 2).contiguous()).values())[-1]
    ref = features["map"].permute(0, 3, 1, 2)
    err = (out - ref).abs().max().item() / ref.abs().max().item()
    if out.shape != ref.shape or not err <= tol:
        fail(f"{arch}: detection body feature map differs from sslight's forward_map (rel err {err})")
    return err


def d2_name_from_torchvision(name):
    """Independent statement of Detectron2's ResNet naming (torchvision name -> D2 name, None if not kept)."""
    if name.endswith("num_batches_tracked") or name.startswith("fc."):
        return None
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", name)
    if m:
        return "stem.conv1." + ("weight" if m.group(1) == "conv1" else "norm." + m.group(2))
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)", name)
    if m:
        s, b, kind, i, leaf = m.groups()
        return f"res{int(s) + 1}.{b}.conv{i}." + ("weight" if kind == "conv" else "norm." + leaf)
    m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", name)
    if m:
        s, b, idx, leaf = m.groups()
        return f"res{int(s) + 1}.{b}.shortcut." + ("weight" if idx == "0" else "norm." + leaf)
    fail(f"unexpected torchvision ResNet name {name}")


def check_detectron2(path, export, arch):
    with open(path, "rb") as f:
        ckpt = pickle.load(f)
    if ckpt.get("__author__") != "sslight" or ckpt.get("matching_heuristics") is not True:
        fail(f"{arch}: Detectron2 header {[(k, v) for k, v in ckpt.items() if k != 'model']}")
    model = ckpt["model"]
    bad = [k for k in model if not any(re.fullmatch(r, k) for r in D2_RULES)]
    if bad:
        fail(f"{arch}: keys break the Detectron2 naming rules: {bad[:5]}")
    reference = getattr(torchvision.models, arch)(weights=None).state_dict()
    expected = {d2_name_from_torchvision(k): k for k in reference if d2_name_from_torchvision(k)}
    if set(model) != set(expected):
        fail(f"{arch}: D2 keys differ: extra {sorted(set(model) - set(expected))[:5]}, "
             f"missing {sorted(set(expected) - set(model))[:5]}")
    for k, tv_name in expected.items():
        v = model[k]
        if not isinstance(v, np.ndarray) or tuple(v.shape) != tuple(reference[tv_name].shape):
            fail(f"{arch}: {k} shape {getattr(v, 'shape', None)} is not torchvision's OIHW "
                 f"{tuple(reference[tv_name].shape)}")
        if not np.array_equal(v, export[tv_name].numpy()):
            fail(f"{arch}: {k} differs from the exported {tv_name}")
    if tuple(model["stem.conv1.weight"].shape) != (64, 3, 7, 7):
        fail(f"{arch}: stem conv is not OIHW (64, 3, 7, 7)")
    return len(model)


def check_d2_configs():
    import yaml
    cdir = os.path.join(ROOT, "configs", "detection")
    base = yaml.safe_load(open(os.path.join(cdir, "Base-RCNN-FPN-SyncBN-1x.yaml")))
    m, s = base["MODEL"], base["SOLVER"]
    assert m["RESNETS"]["NORM"] == m["FPN"]["NORM"] == m["ROI_BOX_HEAD"]["NORM"] == "SyncBN"
    assert m["ROI_MASK_HEAD"]["NORM"] == "SyncBN" and base["INPUT"]["FORMAT"] == "RGB"
    assert m["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and m["PIXEL_STD"] == [58.395, 57.12, 57.375]
    assert s["STEPS"] == "(60000, 80000)" and s["MAX_ITER"] == 90000 and s["IMS_PER_BATCH"] == 16
    for depth in (18, 34):
        cfg = yaml.safe_load(open(os.path.join(cdir, f"mask_rcnn_R{depth}_FPN_SyncBN_1x_sslight.yaml")))
        assert cfg["_BASE_"] == "Base-RCNN-FPN-SyncBN-1x.yaml"
        assert cfg["MODEL"]["RESNETS"] == {"DEPTH": depth, "RES2_OUT_CHANNELS": 64}


def check_one(spec, workdir):
    parts = spec.split("=")
    arch, export_path = parts[0], parts[1]
    export = read_safetensors(export_path)
    tv_path, d2_path = run_converter(export_path, workdir, arch)
    state = torch.load(tv_path, map_location="cpu")
    ex_model = example.build_model(arch)
    n_ex = check_torchvision_load(ex_model, state, export, arch, "example")
    frozen = [n for n, p in ex_model.backbone.body.named_parameters() if not p.requires_grad]
    if frozen:
        fail(f"{arch}: the example freezes backbone parameters {frozen[:3]}")
    stock = stock_model(arch)
    n_stock = check_torchvision_load(stock, state, export, arch, "stock")
    line = f"{arch}: torchvision body {n_ex}/{len(export)} tensors (example, BN), {n_stock} (stock, FrozenBN) exact"
    if len(parts) > 2:
        features = read_safetensors(parts[2])
        line += f"; feature map rel err {check_features(ex_model, features, arch):.1e} / " \
                f"{check_features(stock, features, arch):.1e}"
    if d2_path:
        line += f"; detectron2 {check_detectron2(d2_path, export, arch)} keys OK"
    print("detection_check: " + line, flush=True)


def main():
    torch.set_num_threads(1)
    workdir, specs = sys.argv[1], sys.argv[2:]
    for spec in specs:
        check_one(spec, workdir)
    check_d2_configs()
    print(f"detection_check: OK {len(specs)} backbones", flush=True)


if __name__ == "__main__":
    main()
