"""Benchmark: training throughput of ``train_classifier`` vs the model's raw forward+backward.

Measured in one run, on one machine, at one thread count, with the same batch
size, memory layout (channels-last) and precision (bfloat16 autocast on CUDA):

1. raw: ``loss = cross_entropy(model(x), y); loss.backward()`` on one fixed batch
   already on the device — the ceiling for any training loop;
2. training: one epoch of :func:`overinterp.training.trainer.train_classifier` (shuffling,
   uint8 → float, random crop + flip, SGD step, metrics), no evaluation;

and prints their ratio (training / raw). Images are random uint8 (throughput
does not depend on content) unless ``--data`` names a dataset.

Usage:  .venv/bin/python bench/train.py [--arch resnet20] [--images 2560] [--threads 2]
        [--data folder:train@../shared/data/cifar10-jpeg.zip]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from overinterp.data import load_dataset
from overinterp.models import create_model
from overinterp.training.trainer import make_config, train_classifier


def raw_throughput(arch: str, batch: int, device: torch.device, seconds: float, amp: bool) -> float:
    torch.manual_seed(0)
    model = create_model(arch, preprocessing="cifar10").to(device).train()
    model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        model.zero_grad(set_to_none=True)
        loss.backward()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=2560, help="images in the timed training epoch")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the raw measurement")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default=None)
    ap.add_argument("--data", help="dataset spec for the training epoch (default: random uint8 images)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if args.data:
        data = load_dataset(args.data, progress=False)
        g = torch.Generator().manual_seed(0)
        data = data.subset(torch.randperm(len(data), generator=g)[: args.images])
        train = (data.images, data.labels)
    else:
        g = torch.Generator().manual_seed(0)
        train = (
            torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (args.images,), generator=g),
        )
    config = make_config("paper", arch=args.arch, epochs=2, batch_size=args.batch_size)
    # epoch 1 warms up (allocator, kernels); epoch 2 is the measurement
    result = train_classifier(config, train, None, None, device=device, progress=False)
    trained = result.history[-1]["images_per_second"]
    raw = raw_throughput(args.arch, args.batch_size, device, args.seconds, amp)
    report = {
        "arch": args.arch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "amp": amp,
        "batch_size": args.batch_size,
        "images": len(train[1]),
        "raw_forward_backward_images_per_s": round(raw, 1),
        "training_images_per_s": round(trained, 1),
        "ratio": round(trained / raw, 3),
    }
    print(
        f"{args.arch} on {device} ({torch.get_num_threads()} threads, batch {args.batch_size}"
        f"{', bf16 autocast' if amp else ''}, channels-last):"
    )
    print(f"  raw forward+backward : {raw:9.1f} images/s")
    print(f"  training (1 epoch)   : {trained:9.1f} images/s  (shuffle, uint8→float, crop+flip, SGD step)")
    print(f"  ratio                : {trained / raw:9.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
