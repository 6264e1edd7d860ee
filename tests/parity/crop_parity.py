"""Reference outputs of PIL + torchvision for tests/test_parity_crop.cpp (run with Debian's /usr/bin/python3).

usage: crop_parity.py IMAGES_DIR OUT_DIR
IMAGES_DIR is what tests/data/fetch_test_images.sh made (photos/, variants/). Writes OUT_DIR/cases.txt, one
case per line, and one raw HWC RGB uint8 file per case:
  decode <image> <width> <height> <file>                PIL.Image.open(...).convert("RGB") (ImageFolder's loader)
  crop <image> <top> <left> <height> <width> <size> <file>
                                                        F.resized_crop(img, top, left, h, w, [size, size], BICUBIC)
  eval <image> <file>                                   Resize(256, BICUBIC) then CenterCrop(224)
"""
import os
import sys

from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.functional as F

BICUBIC = T.InterpolationMode.BICUBIC

DECODE = ["photos/" + n for n in ("baboon.jpg", "fruits.jpg", "building.jpg", "board.jpg", "aero1.jpg",
                                  "leuvenA.jpg", "messi5.jpg", "home.jpg", "orange.jpg", "starry_night.jpg",
                                  "aloeL.jpg", "butterfly.jpg", "smarties.png", "rubberwhale1.png", "box.png")]
DECODE += ["variants/" + n for n in ("s422.jpg", "progressive.jpg", "restart.jpg", "arith.jpg", "gray.jpg",
                                     "cmyk.jpg", "extraneous.jpg", "png_rgba.png", "png_gray.png")]

# (image, top, left, height, width, size): 224 from large boxes, 96/128 from small ones, upscaling, odd boxes.
CROPS = [
    ("photos/aloeL.jpg", 50, 100, 1000, 1100, 224),
    ("photos/leuvenA.jpg", 0, 0, 563, 751, 224),
    ("photos/baboon.jpg", 10, 20, 400, 300, 224),
    ("photos/aloeL.jpg", 300, 400, 150, 120, 96),
    ("photos/baboon.jpg", 100, 200, 60, 80, 96),
    ("photos/leuvenA.jpg", 200, 300, 140, 170, 128),
    ("photos/starry_night.jpg", 37, 411, 301, 255, 128),
    ("photos/messi5.jpg", 100, 100, 50, 70, 224),
    ("photos/baboon.jpg", 0, 0, 30, 30, 128),
    ("photos/butterfly.jpg", 3, 7, 333, 177, 128),
    ("photos/smarties.png", 11, 13, 300, 250, 96),
]
EVAL = ["photos/baboon.jpg", "photos/leuvenA.jpg", "photos/messi5.jpg", "photos/aloeL.jpg", "photos/smarties.png",
        "photos/box.png"]


def load(images, rel):
    with open(os.path.join(images, rel), "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def main():
    images, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    lines = []

    def save(img, name):
        with open(os.path.join(out, name), "wb") as f:
            f.write(img.tobytes())
        return name

    for i, rel in enumerate(DECODE):
        if os.path.exists(os.path.join(images, rel)):
            img = load(images, rel)
            lines.append(f"decode {rel} {img.width} {img.height} {save(img, f'decode{i}.rgb')}")
    for i, (rel, top, left, h, w, size) in enumerate(CROPS):
        if os.path.exists(os.path.join(images, rel)):
            img = F.resized_crop(load(images, rel), top, left, h, w, [size, size], BICUBIC)
            lines.append(f"crop {rel} {top} {left} {h} {w} {size} {save(img, f'crop{i}.rgb')}")
    evaluation = T.Compose([T.Resize(256, interpolation=BICUBIC), T.CenterCrop(224)])
    for i, rel in enumerate(EVAL):
        if os.path.exists(os.path.join(images, rel)):
            lines.append(f"eval {rel} {save(evaluation(load(images, rel)), f'eval{i}.rgb')}")
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
