"""Time to accuracy: the fixed-size recipe versus progressive learning (small images first), on plankton.

Both recipes train timm resnet18 with taxotrain's defaults on the plankton store, using the same share of the train
split per epoch and validating on the whole val split after every epoch. The fixed recipe trains at the full size
throughout; its wall time to its final val class top-1 is the baseline. The progressive recipe grows the image size
from ``--start-size`` to the full size over ``--stages`` stages (``progressive.start_size``/``num_stages``; with
``progressive.scale_batch`` on by default: larger batches and a square-root-scaled LR at the smaller sizes, the
EfficientNetV2 recipe; ``--no-scale-batch`` keeps batch 64, ``--recipe`` takes explicit stages), and its
time is the wall time at the first epoch whose val class top-1 reaches the fixed recipe's final figure. Wall times
are measured from the start of training, validation included, by a callback in the same process.

Usage: python benchmarks/progressive.py [--size 48] [--start-size 24] [--epochs 4] [--progressive-epochs 5]
                                       [--no-scale-batch] [--recipe YAML]
Ends with ``RATIO <progressive time to accuracy / fixed time to accuracy>`` (a time ratio: lower is better); when
the progressive run never reaches the fixed accuracy, its total time is used and the row says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L

from common import plankton_store, record
from taxotrain.config import load_config
from taxotrain.training.engine import fit


class ValClock(L.Callback):
    """Wall time since the start of training and val class top-1 at the end of each epoch; stops the fit once
    ``target`` is reached (the time to reach it is all the benchmark needs)."""

    def __init__(self, metric: str, target: float | None = None) -> None:
        self.metric = metric
        self.target = target
        self.points: list[tuple[float, float, int]] = []  # (seconds, val top-1, image size)
        self.t0 = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        size = trainer.datamodule.current_stage().image_size
        self.points.append((time.perf_counter() - self.t0, float(trainer.callback_metrics[self.metric]), size))
        s, acc, size = self.points[-1]
        print(f"  epoch {len(self.points)}: {size}px, val {acc:.4f} at {s:.0f}s", flush=True)
        if self.target is not None and acc >= self.target:
            trainer.should_stop = True


def run(store: str, overrides: list[str], target: float | None = None) -> list[tuple[float, float, int]]:
    """Fit resnet18 on ``store`` with the benchmark's settings plus ``overrides``: (seconds, val top-1, size) per
    epoch; the fit stops early once val class top-1 reaches ``target``."""
    clock = ValClock("val/class/top1", target)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"data.store={store}", f"run.dir={tmp}/run", "model.backbone=resnet18",
                                 "trainer.progress=none", "logging.mlflow=false", "logging.tensorboard=false",
                                 *overrides])
        fit(cfg, callbacks=[clock])
    return clock.points


def epoch_costs(fixed: list[tuple[float, float, int]], prog: list[tuple[float, float, int]]) -> dict[int, float]:
    """Mean epoch time at each progressive image size over the fixed recipe's mean epoch time (validation
    included): what a small stage saves on this machine, whatever it learns. One-off costs count in the epoch they
    fall in: each stage starts new loader workers, which the fixed run does once over all its epochs."""
    def durations(points: list[tuple[float, float, int]]) -> list[tuple[int, float]]:
        return [(size, t - prev) for (t, _, size), prev in zip(points, [0.0] + [t for t, _, _ in points], strict=False)]

    base = sum(d for _, d in durations(fixed)) / len(fixed)
    by_size: dict[int, list[float]] = {}
    for size, d in durations(prog):
        by_size.setdefault(size, []).append(d)
    return {size: sum(ds) / len(ds) / base for size, ds in by_size.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--start-size", type=int, default=24)
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="epochs of the fixed recipe")
    p.add_argument("--progressive-epochs", type=int, default=5, help="epochs of the progressive recipe")
    p.add_argument("--train-fraction", type=float, default=0.4, help="share of the train split per epoch")
    p.add_argument("--scale-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="progressive.scale_batch: larger batches (and a sqrt-scaled LR) at the smaller sizes")
    p.add_argument("--recipe", default=None,
                   help="explicit progressive.stages as YAML, e.g. '[{epochs: 3, image_size: 24}, {epochs: 2}]' "
                        "(overrides --start-size/--stages/--scale-batch)")
    args = p.parse_args()
    store = str(plankton_store())
    common = [f"data.image_size={args.size}", f"trainer.limit_train_batches={args.train_fraction}"]
    print(f"fixed: {args.epochs} epochs at {args.size}px", flush=True)
    fixed = run(store, [*common, f"trainer.max_epochs={args.epochs}"])
    target = fixed[-1][1]
    t_fixed = next(s for s, acc, _ in fixed if acc >= target)
    if args.recipe:
        recipe = [f"progressive.stages={args.recipe}"]
        described = f"stages {args.recipe}"
    else:
        recipe = [f"progressive.start_size={args.start_size}", f"progressive.num_stages={args.stages}",
                  f"progressive.scale_batch={str(args.scale_batch).lower()}"]
        described = (f"{args.start_size}->{args.size}px in {args.stages} stages"
                     + (", batch scaled" if args.scale_batch else ""))
    print(f"progressive: {args.progressive_epochs} epochs, {described}", flush=True)
    prog = run(store, [*common, f"trainer.max_epochs={args.progressive_epochs}", *recipe], target=target)
    print("epoch cost against a fixed-recipe epoch: " + ", ".join(
        f"{size}px {cost:.2f}x" for size, cost in epoch_costs(fixed, prog).items()), flush=True)
    reached = [s for s, acc, _ in prog if acc >= target]
    t_prog = reached[0] if reached else prog[-1][0]
    note = "" if reached else f"; NOT REACHED (best {max(a for _, a, _ in prog):.4f}): total time used"
    print(f"fixed reached val class top-1 {target:.4f} at {t_fixed:.0f}s; progressive "
          + (f"reached it at {t_prog:.0f}s" if reached else f"did not reach it in {t_prog:.0f}s") + note)
    record("progressive", f"{t_prog:.0f} vs {t_fixed:.0f} s to val class top-1 {target:.3f}", t_prog / t_fixed,
           f"resnet18, fixed {args.epochs} ep at {args.size}px vs progressive {args.progressive_epochs} ep "
           f"{described}, {args.train_fraction:g} of train per epoch"
           + note)


if __name__ == "__main__":
    main()
