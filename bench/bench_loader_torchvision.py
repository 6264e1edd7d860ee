"""The torchvision side of bench/bench_loader.cpp: DataLoader + PIL multi-crop samples/s on the same images.

usage: bench_loader_torchvision.py N_GLOBAL GLOBAL_SIZE G_LO G_HI N_LOCAL LOCAL_SIZE L_LO L_HI SECONDS
                                   BATCH NUM_WORKERS LIST_FILE
LIST_FILE holds "<path> <label>" lines (the ImageFolder the C++ side indexes). Each sample = PIL open +
convert("RGB") (torchvision's default loader), then per view RandomResizedCrop(BICUBIC) + RandomHorizontalFlip +
PILToTensor (uint8, as sslight's loader hands out uint8 crops); the photometric ops are excluded on both sides.
Batches come from torch.utils.data.DataLoader(shuffle=True, drop_last=True, persistent_workers). Prints
"samples_per_s <wall-clock rate> <rate per CPU-second of this process and its workers>". Run with Debian's
/usr/bin/python3.
"""
import os
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image


class MultiCrop(torch.utils.data.Dataset):
    def __init__(self, samples, transforms):
        self.samples, self.transforms = samples, transforms

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return [t(img) for t in self.transforms], label


def cpu_seconds(pids):
    """utime + stime of the given processes (this one and the DataLoader workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def child_pids():
    me = str(os.getpid())
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.append(int(d))
            except OSError:
                pass
    return out


def main():
    a = sys.argv[1:]
    n_global, global_size, g_lo, g_hi = int(a[0]), int(a[1]), float(a[2]), float(a[3])
    n_local, local_size, l_lo, l_hi = int(a[4]), int(a[5]), float(a[6]), float(a[7])
    seconds, batch, workers = float(a[8]), int(a[9]), int(a[10])
    with open(a[11]) as f:
        samples = [(p, int(lab)) for p, lab in (line.rsplit(" ", 1) for line in f if line.strip())]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bicubic = T.InterpolationMode.BICUBIC

    def view(size, lo, hi):
        return T.Compose([T.RandomResizedCrop(size, scale=(lo, hi), interpolation=bicubic),
                          T.RandomHorizontalFlip(), T.PILToTensor()])

    transforms = [view(global_size, g_lo, g_hi)] * n_global + [view(local_size, l_lo, l_hi)] * n_local
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers > 0 else {}
    loader = torch.utils.data.DataLoader(MultiCrop(samples, transforms), batch_size=batch, shuffle=True,
                                         drop_last=True, num_workers=workers, **extra)
    for _ in loader:  # warm-up epoch (starts the workers)
        pass
    pids = [os.getpid()] + child_pids()
    done, start, cpu0 = 0, time.perf_counter(), cpu_seconds(pids)
    while time.perf_counter() - start < seconds:
        for views, _ in loader:
            done += views[0].shape[0]
            if time.perf_counter() - start >= seconds:
                break
    wall, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu0
    print(f"samples_per_s {done / wall:.2f} {done / max(cpu, 1e-9):.2f}")


if __name__ == "__main__":
    main()
