"""The torchvision side of bench/bench_decode.cpp: PIL decode + multi-crop samples/s on one core.

usage: bench_decode_pil.py N_GLOBAL GLOBAL_SIZE G_LO G_HI N_LOCAL LOCAL_SIZE L_LO L_HI SECONDS FILE...
Each sample = Image.open(BytesIO(bytes)).convert("RGB") (torchvision's ImageFolder loader, the bytes read
beforehand as sslight does) then RandomResizedCrop(BICUBIC) + RandomHorizontalFlip for every view, on PIL
images: the same work as sslight's decode + crop (no ToTensor, no photometric augmentation). Prints
"samples_per_s <wall-clock rate> <rate per CPU-second of this process>". Run with Debian's /usr/bin/python3.
"""
import io
import sys
import time

from PIL import Image
import torch
import torchvision.transforms as T


def main():
    a = sys.argv[1:]
    n_global, global_size, g_lo, g_hi = int(a[0]), int(a[1]), float(a[2]), float(a[3])
    n_local, local_size, l_lo, l_hi = int(a[4]), int(a[5]), float(a[6]), float(a[7])
    seconds = float(a[8])
    blobs = []
    for path in a[9:]:
        with open(path, "rb") as f:
            blobs.append(f.read())
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bicubic = T.InterpolationMode.BICUBIC
    glob = T.Compose([T.RandomResizedCrop(global_size, scale=(g_lo, g_hi), interpolation=bicubic),
                      T.RandomHorizontalFlip()])
    loc = T.Compose([T.RandomResizedCrop(local_size, scale=(l_lo, l_hi), interpolation=bicubic),
                     T.RandomHorizontalFlip()])

    def sample(i):
        img = Image.open(io.BytesIO(blobs[i % len(blobs)])).convert("RGB")
        return [glob(img) for _ in range(n_global)] + [loc(img) for _ in range(n_local)]

    for i in range(len(blobs)):  # warm-up
        sample(i)
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        sample(done)
        done += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"samples_per_s {done / wall:.2f} {done / cpu:.2f}")


if __name__ == "__main__":
    main()
