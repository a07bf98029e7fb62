"""What ``fit`` shows while it trains: a rich progress bar on a terminal, plain log lines otherwise.

Both show the running train loss, the learning rate and the throughput during an epoch, count epochs from 1 (as
``metrics.csv`` and the logs do), and leave one line of validation results per epoch on screen.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from taxotrain.training.callbacks import current_lr

PLAIN_EVERY_S = 10.0  # plain mode prints at least this often within an epoch


class _EpochClock:
    """Samples and seconds since the epoch started (what the throughput is)."""

    def __init__(self) -> None:
        self.t0, self.samples = time.time(), 0

    def restart(self) -> None:
        self.t0, self.samples = time.time(), 0

    def add(self, batch: Any) -> None:
        inputs = batch.get("input") if isinstance(batch, dict) else None
        self.samples += len(inputs) if inputs is not None else 0

    @property
    def rate(self) -> float:
        return self.samples / max(1e-9, time.time() - self.t0)


def step_metrics(trainer: L.Trainer, pl_module: L.LightningModule, clock: _EpochClock) -> dict[str, float]:
    """Running mean train loss of the epoch, current learning rate and samples per second."""
    return {"loss": float(getattr(pl_module, "train_loss_mean", float("nan"))), "lr": current_lr(trainer),
            "samples/s": clock.rate}


def epoch_line(trainer: L.Trainer, pl_module: L.LightningModule, seconds: float) -> str:
    """``epoch 3/6 done in 84 s: train loss 1.2345; val loss 1.1, group/top1 0.80, class/top1 0.61``."""
    m = trainer.callback_metrics
    parts = [f"{k.removeprefix('val/')} {float(v):.4f}" for k, v in m.items()
             if k.startswith("val/") and (k.endswith("/top1") or k == "val/loss")]
    return (f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done in {seconds:.0f} s: train loss "
            f"{getattr(pl_module, 'train_loss_mean', float('nan')):.4f}; val " + ", ".join(parts))


class TrainProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1, showing loss, learning rate and throughput (not the logger's
    version), and printing each epoch's validation results as a line that stays on screen."""

    def __init__(self) -> None:
        super().__init__(leave=False)
        self._clock = _EpochClock()

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        values = step_metrics(trainer, pl_module, self._clock)
        return {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}",
                "samples/s": f"{values['samples/s']:.0f}"}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock.restart()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._clock.add(batch)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking and trainer.is_global_zero and self._console is not None:
            self._console.print(epoch_line(trainer, pl_module, time.time() - self._clock.t0))


class PlainProgress(L.Callback):
    """Log lines instead of a progress bar when output is not a terminal (CI logs, ``nohup``, files): one every
    ``every_n_steps`` steps or ``every_s`` seconds, whichever comes first, and one per epoch with the results."""

    def __init__(self, every_n_steps: int = 50, stream: Any = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.every, self.every_s = every_n_steps, every_s
        self.stream = stream or sys.stdout
        self._clock = _EpochClock()
        self._last = time.time()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock.restart()
        self._last = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._clock.add(batch)
        due = (batch_idx + 1) % self.every == 0 or time.time() - self._last >= self.every_s
        if due and trainer.is_global_zero:
            m = step_metrics(trainer, pl_module, self._clock)
            self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {batch_idx + 1}/"
                        f"{trainer.num_training_batches} loss {m['loss']:.4f} lr {m['lr']:.2e} "
                        f"{m['samples/s']:.0f} samples/s")
            self._last = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._print(epoch_line(trainer, pl_module, time.time() - self._clock.t0))
