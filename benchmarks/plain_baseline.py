"""The reference plain loop of the foundation issue, on a taxotrain store's own split, for an apples-to-apples check.

Plain PyTorch + timm: resnet18 at 48 px (images squashed to a square, as a plain ``Resize((48, 48))`` does), flips
and 90-degree rotations, AdamW + one-cycle, 6 epochs, class labels only; group accuracy is read off the predicted
class through the taxonomy. It trains on the store's train split and reports top-1 on its test split, so its
figures compare directly with ``taxotrain evaluate`` on the same store.

Usage: python benchmarks/plain_baseline.py plankton.h5 [--epochs 6] [--size 48]
Prints the figures and ends with ``RATIO <taxotrain class top-1 / baseline class top-1>`` when --run is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from taxotrain.data.images import image_norm
from taxotrain.data.store import Store
from taxotrain.evaluation.metrics import per_rank


class PlainSplit(Dataset):
    """Decode + squash-resize + flips/rot90, the plain way."""

    def __init__(self, store: Store, split: str, size: int, train: bool) -> None:
        self.store, self.idx, self.train = store, store.splits[split], train
        mean, std = image_norm(store, 3)
        self.tf = v2.Compose([v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True),
                              v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.idx[i])
        img = decode_image(torch.frombuffer(bytearray(self.store.read(j)), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
        x = self.tf(img)
        if self.train:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if torch.rand(()) < 0.5:
                x = x.flip(-2)
            x = torch.rot90(x, int(torch.randint(4, ())), dims=(-2, -1))
        return x, int(self.store.labels[j, -1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--run", type=Path, help="a taxotrain run evaluated on the same store, to print the ratio")
    args = p.parse_args()
    torch.manual_seed(0)
    store = Store(args.store)
    tax = store.taxonomy
    train = DataLoader(PlainSplit(store, "train", args.size, True), args.batch_size, shuffle=True, drop_last=True,
                       num_workers=args.workers, persistent_workers=args.workers > 0)
    test = DataLoader(PlainSplit(store, "test", args.size, False), 256, num_workers=args.workers)
    model = timm.create_model("resnet18", num_classes=tax.num_classes[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(train))
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} at {time.time() - t0:.0f}s", flush=True)
    fit_s = time.time() - t0
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for x, y in test:
            preds.append(model(x).argmax(1).numpy())
            labels.append(y.numpy())
    pred, label = np.concatenate(preds), np.concatenate(labels)
    group_of = tax.ancestors[-1][:, 0]
    class_top1 = float((pred == label).mean())
    group_top1 = float((group_of[pred] == group_of[label]).mean())
    print(f"plain loop on {args.store} test split: class top-1 {class_top1:.4f}, group top-1 (via class) "
          f"{group_top1:.4f}, fit {fit_s / 60:.1f} min")
    if args.run:
        ours = per_rank(json.loads((args.run / "metrics.json").read_text()))["class"]["top1"]
        print(f"taxotrain run {args.run}: class top-1 {ours:.4f}")
        print(f"RATIO {ours / class_top1:.3f}")


if __name__ == "__main__":
    main()
