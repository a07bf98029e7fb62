"""Loader throughput: images/s through the training transforms, taxotrain's store versus ImageFolder + PIL.

Both sides read the same plankton train images, run the same training transforms (taxotrain's
``build_transforms``: aspect-preserving resize, pad to square, flips, 90-degree rotations, normalise) with the same
DataLoader settings and worker count, and are timed over the same number of batches after a warm-up. The baseline
is what a user writes without taxotrain: ``torchvision.datasets.ImageFolder`` over the class folders with its
default PIL loader (RGB), then ``PILToTensor``. taxotrain reads encoded bytes from the memory-mapped HDF5 store,
decodes with torchvision's libjpeg-turbo path and, for a greyscale store, decodes one channel (what ``fit`` does
with ``data.channels: auto``); the 3-channel figure is printed too, for an equal-channels comparison.

Usage: python benchmarks/loader.py [--workers 2] [--batches 150] [--repeats 5] [--size 48]
Ends with ``RATIO <taxotrain images/s / ImageFolder images/s>`` (a throughput ratio: higher is better).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from common import PLANKTON, plankton_store, record
from taxotrain.config import AugmentConfig
from taxotrain.data.dataset import StoreDataset
from taxotrain.data.images import DecodeImage, build_transforms, image_norm
from taxotrain.data.store import Store


def images_per_second(loader: Iterable, batches: int, warmup: int) -> float:
    """Throughput over ``batches`` batches after ``warmup`` batches (worker start-up excluded)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        n += len(batch["input"] if isinstance(batch, dict) else batch[0])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds; the median of each side is kept")
    args = p.parse_args()
    store = Store(plankton_store())
    n = (args.batches + args.warmup) * args.batch_size
    idx = store.splits["train"][torch.randperm(len(store.splits["train"]), generator=torch.Generator().manual_seed(0))
                                [:n].numpy()]
    augment = AugmentConfig()

    def loader(ds: torch.utils.data.Dataset) -> DataLoader:
        return DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                          persistent_workers=False, prefetch_factor=4 if args.workers else None)

    def taxotrain_loader(channels: int) -> DataLoader:
        mean, std = image_norm(store, channels)
        tf = build_transforms(args.size, mean, std, True, augment, "edge")
        return loader(StoreDataset(store, idx, DecodeImage(channels), tf))

    # the same files through ImageFolder: map each store record to its file by its relative path
    folder = ImageFolder(str(PLANKTON / "images"))
    by_path = {os.path.relpath(path, PLANKTON / "images"): i for i, (path, _) in enumerate(folder.samples)}
    mean3, std3 = image_norm(store, 3)
    folder.transform = v2.Compose([v2.PILToTensor(), build_transforms(args.size, mean3, std3, True, augment, "edge")])
    baseline = loader(Subset(folder, [by_path[str(store.paths[i])] for i in idx]))

    channels = 1 if store.attrs["grayscale"] else 3
    results: dict[str, list[float]] = {"imagefolder": [], "taxotrain": [], "taxotrain_3ch": []}
    for r in range(args.repeats):
        results["imagefolder"].append(images_per_second(baseline, args.batches, args.warmup))
        results["taxotrain"].append(images_per_second(taxotrain_loader(channels), args.batches, args.warmup))
        results["taxotrain_3ch"].append(images_per_second(taxotrain_loader(3), args.batches, args.warmup))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in results.items()), flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    ratio = med["taxotrain"] / med["imagefolder"]
    print(f"{args.batches} batches of {args.batch_size} at {args.size}px, {args.workers} workers, median of "
          f"{args.repeats}: ImageFolder+PIL {med['imagefolder']:.0f} img/s; taxotrain store {med['taxotrain']:.0f} "
          f"img/s ({channels} channel(s)); taxotrain store at 3 channels {med['taxotrain_3ch']:.0f} img/s "
          f"(ratio {med['taxotrain_3ch'] / med['imagefolder']:.2f})")
    record("loader", f"{med['taxotrain']:.0f} vs {med['imagefolder']:.0f} img/s", ratio,
           f"{args.workers} workers, batch {args.batch_size}, {args.size}px; 3-channel ratio "
           f"{med['taxotrain_3ch'] / med['imagefolder']:.2f}")


if __name__ == "__main__":
    main()
