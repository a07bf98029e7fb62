"""Callbacks: per-epoch metrics.csv, RNG state in checkpoints, atomic checkpoint writes, moved-run-safe checkpoints."""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from taxotrain.files import atomic_path


def current_lr(trainer: L.Trainer) -> float:
    """The first parameter group's learning rate; NaN when nothing is optimised (a closed-form fit)."""
    groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
    return float(groups[0]["lr"]) if groups else float("nan")


class EpochCSV(L.Callback):
    """Writes one row per epoch to ``metrics.csv``: epoch, time, lr, mean train loss and every ``val/*`` metric.

    The row is written before the epoch's checkpoint; on resume, rows of epochs after the checkpoint are dropped,
    so the file always matches the checkpoint it continues from.
    """

    def __init__(self, path: Path, extra: Callable[[L.Trainer], dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        self.extra = extra or (lambda trainer: {})  # per-epoch extra columns, e.g. the stage's image/batch size
        self._t0 = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.time()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs after a resumed checkpoint restored current_epoch
        if self.path.is_file() and trainer.global_rank == 0:
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < trainer.current_epoch]
            self._write(rows, list(rows[0]) if rows else None)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "seconds": round(time.time() - self._t0, 2),
               "lr": current_lr(trainer),
               "train/loss": getattr(pl_module, "train_loss_mean", float("nan")), **self.extra(trainer), **metrics}
        rows = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) != trainer.current_epoch]
        rows.append(row)
        columns = list(dict.fromkeys([c for r in rows for c in r]))
        self._write(rows, columns)

    def _write(self, rows: list[dict[str, Any]], columns: list[str] | None) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as fh:
            if columns:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)


class RNGState(L.Callback):
    """Saves and restores the Python, NumPy and torch RNG states with each checkpoint (as plain types)."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state(legacy=True)
        state = {"python": random.getstate(), "torch": torch.get_rng_state(),
                 "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it: a kill mid-write never leaves a broken file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files are known by their name inside the run folder, so a run folder that was moved
    or copied resumes with its best score (Lightning's own forgets it when the folder changed, and a worse epoch
    would then replace ``best.ckpt``). Its state is saved under ``ModelCheckpoint``'s key."""

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = state_dict.get("dirpath")
        if before and self.dirpath and str(before) != str(self.dirpath):
            def moved(path: Any) -> Any:
                return str(Path(self.dirpath) / Path(path).name) if path else path  # type: ignore[arg-type]

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: moved(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path",
                                                                    "last_model_path")},
                          "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)
