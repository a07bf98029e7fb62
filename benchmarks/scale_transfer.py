"""Why progressive learning's small stages score near zero at the final size: what a model trained on small images
scores at its own size and at the full size, on plankton.

Trains timm resnet18 with taxotrain's defaults at ``--small`` px (``--epochs`` epochs on ``--train-fraction`` of the
train split), then scores the whole val split (class top-1):

- at ``--small`` px, the size it trained at;
- at ``--size`` px, the size a progressive run validates at;
- at ``--size`` px after re-estimating the batch-norm statistics there (FixRes's remedy for a train/test size gap);
- at ``--size`` px with the convolution taps that never saw a pixel at ``--small`` px set to zero (at 24 px the last
  stage's maps are 1x1, so its 3x3 kernels train only their centre; the rest keeps its random initialisation).

If only the first figure is high, the model learned the organisms at the small scale, and neither normalisation
statistics nor untrained weights explain the gap.

Usage: python benchmarks/scale_transfer.py [--small 24] [--size 48] [--epochs 2] [--train-fraction 0.5]
Ends with ``RATIO <val top-1 at --size / val top-1 at --small>`` (how much of what it learned carries to the full size).
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader

from common import plankton_store, record
from taxotrain.config import load_config
from taxotrain.data.dataset import StoreDataset
from taxotrain.data.images import DecodeImage, build_transforms, image_norm
from taxotrain.data.store import Store
from taxotrain.run import load_run
from taxotrain.training.engine import fit


def loader(store: Store, split: str, size: int, channels: int, train: bool = False) -> DataLoader:
    """The split at ``size`` px through the evaluation transforms (training ones if ``train``)."""
    mean, std = image_norm(store, channels)
    ds = StoreDataset(store, store.splits[split], DecodeImage(channels), build_transforms(size, mean, std, train))
    return DataLoader(ds, batch_size=256, shuffle=train, num_workers=2)


@torch.no_grad()
def top1(model: nn.Module, data: DataLoader, rank: str) -> float:
    """Class top-1 of ``model`` (eval mode) over ``data``."""
    model.eval()
    right = total = 0
    for batch in data:
        x, y = batch["input"], batch["target"]
        known = y[:, -1] >= 0
        right += int((model(input=x)[rank].argmax(1) == y[:, -1])[known].sum())
        total += int(known.sum())
    return right / max(1, total)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, data: DataLoader, batches: int) -> None:
    """Replace every batch-norm layer's running statistics with their average over ``batches`` training batches."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i, batch in enumerate(data):
        if i == batches:
            break
        model(input=batch["input"])
    model.eval()


def reads_a_pixel(n: int, kernel: int, stride: int, pad: int, dilation: int) -> list[bool]:
    """For each tap of a 1-D kernel sliding over ``n`` inputs: whether some output reads a real (not padded) input
    through it. Output ``o`` reads input ``o * stride - pad + k * dilation`` through tap ``k``."""
    outputs = (n + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    return [any(0 <= o * stride - pad + k * dilation < n for o in range(outputs)) for k in range(kernel)]


def untrained_taps(model: nn.Module, size: int, channels: int) -> dict[nn.Conv2d, torch.Tensor]:
    """For each convolution, a mask of the kernel taps that read no pixel at ``size`` px (they never get a gradient)."""
    shapes: dict[nn.Conv2d, tuple[int, ...]] = {}

    def remember(conv: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        shapes[conv] = tuple(inputs[0].shape[-2:])

    hooks = [m.register_forward_hook(remember) for m in model.modules()
             if isinstance(m, nn.Conv2d) and isinstance(m.padding, tuple)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    dead = {}
    for conv, (h, w) in shapes.items():
        rows = reads_a_pixel(h, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0])
        cols = reads_a_pixel(w, conv.kernel_size[1], conv.stride[1], conv.padding[1], conv.dilation[1])
        live = torch.tensor(rows)[:, None] & torch.tensor(cols)[None, :]
        if not live.all():
            dead[conv] = ~live
    return dead


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=24)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument("--bn-batches", type=int, default=20, help="training batches for re-estimating batch norm")
    args = p.parse_args()
    path = plankton_store()
    store = Store(path)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"data.store={path}", f"run.dir={tmp}/run", "model.backbone=resnet18",
                                 f"data.image_size={args.small}", f"trainer.max_epochs={args.epochs}",
                                 f"trainer.limit_train_batches={args.train_fraction}", "trainer.progress=none",
                                 "logging.mlflow=false", "logging.tensorboard=false"])
        fit(cfg)
        run = load_run(f"{tmp}/run", "last")
    model, channels, rank = run.model, run.in_chans, run.taxonomy.finest
    at_small = top1(model, loader(store, "val", args.small, channels), rank)
    val_full = loader(store, "val", args.size, channels)
    at_full = top1(model, val_full, rank)
    pruned = copy.deepcopy(model)
    dead = untrained_taps(pruned, args.small, channels)
    with torch.no_grad():
        for conv, mask in dead.items():
            conv.weight[:, :, mask] = 0.0
    zeroed = top1(pruned, val_full, rank)
    reestimate_batchnorm(model, loader(store, "train", args.size, channels, train=True), args.bn_batches)
    bn = top1(model, val_full, rank)
    n_dead = sum(int(m.sum()) * conv.in_channels * conv.out_channels // conv.groups for conv, m in dead.items())
    print(f"resnet18 trained {args.epochs} epochs at {args.small}px ({args.train_fraction:g} of train per epoch); "
          f"val class top-1: {at_small:.3f} at {args.small}px, {at_full:.3f} at {args.size}px, {bn:.3f} at "
          f"{args.size}px after re-estimating batch norm, {zeroed:.3f} at {args.size}px with the {n_dead:,} weights "
          f"that {args.small}px never trains set to zero ({len(dead)} convolutions)", flush=True)
    record("scale_transfer", f"val {at_small:.3f} at {args.small}px, {at_full:.3f} at {args.size}px, {bn:.3f} after BN "
           f"re-estimation, {zeroed:.3f} untrained taps zeroed", at_full / max(at_small, 1e-9),
           f"resnet18, {args.epochs} ep at {args.small}px, {args.train_fraction:g} of train per epoch")


if __name__ == "__main__":
    main()
