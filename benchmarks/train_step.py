"""Seconds per training step: taxotrain's ``fit`` versus a plain PyTorch + timm loop, same model, batch and data.

timm's benchmark method: warm-up steps, then timed steps, synchronised on a GPU. Both sides train timm resnet18
at 48 px on the plankton store's train split, batch 64, AdamW, with the same DataLoader (taxotrain's store
dataset and training transforms, same worker count), so the figure is the cost of everything taxotrain adds
around the step: Lightning, three rank heads and their losses, per-step logging, gradient clipping,
channels_last. The plain loop is one timm model with a class head and ``F.cross_entropy``. The time between one
step's end and the next step's start is reported as the data-wait fraction.

Usage: python benchmarks/train_step.py [--steps 40] [--warmup 10] [--size 48] [--batch-size 64]
Ends with ``RATIO <taxotrain s/step / plain s/step>`` (a time ratio: lower is better).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common import plankton_store, record
from taxotrain.config import load_config
from taxotrain.data.dataset import StoreDataset
from taxotrain.data.images import DecodeImage, build_transforms, image_norm
from taxotrain.data.store import Store
from taxotrain.training.engine import fit


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time of each step (start to end) and of the gaps between steps (waiting for data)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        sync()
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        sync()
        self.ends.append(time.perf_counter())


def per_step(starts: list[float], ends: list[float], warmup: int) -> tuple[float, float]:
    """(seconds per step end-to-end after ``warmup`` steps, fraction of that spent between steps)."""
    n = len(ends) - warmup
    total = (ends[-1] - ends[warmup - 1]) / n
    waits = sum(starts[i] - ends[i - 1] for i in range(warmup, len(ends)))
    return total, waits / (total * n)


def taxotrain_step(store_path: str, args: argparse.Namespace, workers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"data.store={store_path}", f"run.dir={tmp}/run", "model.backbone=resnet18",
                                 f"data.image_size={args.size}", f"data.batch_size={args.batch_size}",
                                 f"data.num_workers={workers}", "trainer.max_epochs=1",
                                 f"trainer.limit_train_batches={args.warmup + args.steps}",
                                 "trainer.limit_val_batches=1", "trainer.progress=none", "logging.mlflow=false",
                                 "logging.tensorboard=false"])
        timer = StepTimer()
        fit(cfg, callbacks=[timer])
    return per_step(timer.starts, timer.ends, args.warmup)


def plain_step(store_path: str, args: argparse.Namespace, workers: int) -> tuple[float, float]:
    torch.manual_seed(0)
    store = Store(store_path)
    channels = 1 if store.attrs["grayscale"] else 3
    mean, std = image_norm(store, channels)
    ds = StoreDataset(store, store.splits["train"], DecodeImage(channels), build_transforms(args.size, mean, std, True))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                        pin_memory=torch.cuda.is_available())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model("resnet18", num_classes=store.taxonomy.num_classes[-1], in_chans=channels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    starts, ends = [], []
    for i, batch in enumerate(loader):
        if i == args.warmup + args.steps:
            break
        sync()
        starts.append(time.perf_counter())
        x, y = batch["input"].to(device, non_blocking=True), batch["target"][:, -1].to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        ends.append(time.perf_counter())
    return per_step(starts, ends, args.warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best of each side is kept")
    args = p.parse_args()
    store = str(plankton_store())
    ours, plain = [], []
    for r in range(args.repeats):
        plain.append(plain_step(store, args, args.workers))
        ours.append(taxotrain_step(store, args, args.workers))
        print(f"round {r + 1}: plain {plain[-1][0]:.3f} s/step ({plain[-1][1]:.0%} waiting for data), taxotrain "
              f"{ours[-1][0]:.3f} s/step ({ours[-1][1]:.0%} waiting for data)", flush=True)
    (t_ours, w_ours), (t_plain, w_plain) = min(ours), min(plain)
    ratio = t_ours / t_plain
    print(f"resnet18 {args.size}px batch {args.batch_size}, {args.workers} workers, {args.steps} timed steps after "
          f"{args.warmup}: plain {t_plain:.3f} s/step, taxotrain {t_ours:.3f} s/step")
    record("train_step", f"{t_ours:.3f} vs {t_plain:.3f} s/step", ratio,
           f"resnet18 {args.size}px batch {args.batch_size}, {args.workers} workers; data wait {w_ours:.0%} "
           f"(taxotrain) / {w_plain:.0%} (plain)")


if __name__ == "__main__":
    main()
