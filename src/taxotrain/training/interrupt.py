"""Ctrl+C during ``fit``: the first finishes the current step, writes ``checkpoints/last.ckpt`` and stops with the
command that resumes; a second stops at once (checkpoints are written atomically, so none is ever half written).

The checkpoint records where in the epoch training stopped (:class:`ResumableLoader`), so the resumed run goes on
with the batches it had not seen, in the same order.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader


class FitInterrupted(Exception):
    """Raised inside ``fit`` after a first Ctrl+C, once the current step is done and ``last.ckpt`` is written."""


class GracefulInterrupt(L.Callback):
    """Handles SIGINT while ``fit`` runs (only where nobody else has claimed it, e.g. not in a tuning trial)."""

    def __init__(self, last: Path) -> None:
        self.last = Path(last)
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            print("\ntaxotrain fit: second Ctrl+C, stopping now; checkpoints/last.ckpt holds the last finished epoch",
                  file=sys.stderr, flush=True)
            os._exit(130)
        self.requested = True
        print("\ntaxotrain fit: Ctrl+C: finishing this step and writing checkpoints/last.ckpt (Ctrl+C again stops at "
              "once)", file=sys.stderr, flush=True)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size > 1:  # every process stops after the same step, or the others would wait forever
            self.requested = trainer.strategy.reduce_boolean_decision(self.requested, all=False)
        if self.requested:
            point = getattr(trainer.datamodule, "resume_point", None)
            if isinstance(point, ResumePoint):
                point.trained = batch_idx + 1  # what was trained on: the loader has already fetched ahead
            trainer.save_checkpoint(self.last)
            raise FitInterrupted(f"interrupted in epoch {trainer.current_epoch + 1}/{trainer.max_epochs} after step "
                                 f"{batch_idx + 1}/{trainer.num_training_batches}")


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader workers leave Ctrl+C to the main process (which finishes the step and saves), then seed as
    Lightning's own worker initialisation does."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


@dataclass
class ResumePoint:
    """Where in an epoch a checkpoint was taken, shared by the data module (which checkpoints it) and its train
    loader (which skips what was trained on): ``trained`` batches of the current epoch when a mid-epoch checkpoint
    is written (0 at an epoch's end), and ``skip_records`` to leave out at the start of the next iteration,
    counted over every process (so a run resumed with another number of processes skips the same records)."""

    trained: int = 0
    skip_records: int = 0


class ResumableLoader(DataLoader):
    """A training DataLoader that continues an epoch where a mid-epoch checkpoint left it: the first iteration after
    a restore skips the records already trained on (its sampler must accept ``skip``, records of its own shard), so
    the same batches come in the same order. With augmentation their random draws can differ from an uninterrupted
    run's, since the loader had already fetched (and augmented) the next batch when the checkpoint was taken."""

    def __init__(self, *args: Any, resume_point: ResumePoint, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_point = resume_point

    def __iter__(self) -> Iterator[Any]:
        point = self.resume_point
        # the shards are strided over one order, so the first T records of the order are the first T / world of
        # every shard, whatever the world size was when they were trained
        world = int(getattr(self.sampler, "world", 1))
        self.sampler.skip = point.skip_records // world  # type: ignore[attr-defined]
        point.skip_records = point.trained = 0
        return super().__iter__()
