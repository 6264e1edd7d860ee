"""Mask R-CNN FPN, 1x schedule, SyncBN everywhere: the torchvision-detection settings for the sslight transfer
runs (tools/train_detection_torchvision.py reads this file). The same recipe as the Detectron2 yaml files next
to it: 90k iterations at 16 images (2 per GPU on 8 GPUs), lr 0.02 dropped 10x at 60k and 80k, linear warmup
over 1000 iterations, weight decay 1e-4, multi-scale training (shorter side 640-800, longer <= 1333).
"""

MODEL = {
    "num_classes": 91,                # COCO category ids as torchvision's detection models use them
    "norm": "syncbn",                 # backbone, FPN, box and mask heads: BatchNorm2d -> SyncBatchNorm (DDP)
    "trainable_layers": "all",        # fine-tune the whole backbone (BN statistics included)
    "box_head": {"conv_layers": [256, 256, 256, 256], "fc_layers": [1024]},   # 4conv1fc, normalised
    "mask_head": {"layers": [256, 256, 256, 256], "dilation": 1},              # 4 convs, normalised
    "rpn_conv_depth": 2,
    "min_size_train": (640, 672, 704, 736, 768, 800),
    "min_size_test": 800,
    "max_size": 1333,
    "image_mean": (0.485, 0.456, 0.406),   # torchvision normalisation in [0, 1] RGB, as sslight pre-trains
    "image_std": (0.229, 0.224, 0.225),
}

SCHEDULE = {
    "images_per_batch": 16,           # global batch
    "base_lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "max_iter": 90000,
    "steps": (60000, 80000),
    "gamma": 0.1,
    "warmup_iters": 1000,
    "warmup_factor": 1e-3,
}

# MobileNetV2: torchvision's mobilenet_backbone(fpn=True) FPN over the last two stages (features 14 and 18,
# strides 16 and 32) plus a max-pooled level, so three anchor levels with all five sizes each (as
# fasterrcnn_mobilenet_v3_large_fpn). The ResNets use the standard five FPN levels, one size each.
MOBILENET_ANCHORS = {"sizes": ((32, 64, 128, 256, 512),) * 3, "aspect_ratios": ((0.5, 1.0, 2.0),) * 3}
