"""What fit shows while it trains: loss, learning rate and throughput within an epoch, epochs counted from 1, one
line of validation results per epoch, no logger version."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest

from taxotrain.config import load_config
from taxotrain.training.engine import fit
from taxotrain.training.progress import PlainProgress, TrainProgressBar
from tests.conftest import TINY


def test_plain_progress_prints_steps_with_loss_lr_and_throughput(synthetic_store: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(None, [f"data.store={synthetic_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=2",
                             "trainer.progress=plain", "trainer.log_every_n_steps=2", *TINY])
    fit(cfg)
    out = capsys.readouterr().out
    steps = re.findall(r"^epoch (\d)/2 step (\d+)/\d+ loss [\d.]+ lr [\d.e+-]+ (\d+) samples/s$", out, re.M)
    assert {s[0] for s in steps} == {"1", "2"} and all(int(s[2]) > 0 for s in steps)  # epochs counted from 1
    done = re.findall(r"^epoch (\d)/2 done in \d+ s: train loss [\d.]+; val loss [\d.]+, .*species/top1 [\d.]+$",
                      out, re.M)
    assert done == ["1", "2"]
    assert "v_num" not in out


def test_plain_progress_prints_at_least_every_few_seconds() -> None:
    lines: list[str] = []
    bar = PlainProgress(every_n_steps=10_000, every_s=0.0)  # never a step multiple, but the time is up
    bar._print = lines.append  # type: ignore[method-assign]

    class T:  # the trainer attributes the callback reads
        current_epoch, max_epochs, num_training_batches, is_global_zero, optimizers = 0, 3, 9, True, []

    bar.on_train_epoch_start(T(), L.LightningModule())  # type: ignore[arg-type]
    bar.on_train_batch_end(T(), L.LightningModule(), None, {"input": [1, 2]}, 0)  # type: ignore[arg-type]
    assert lines and lines[0].startswith("epoch 1/3 step 1/9")


def test_rich_bar_counts_from_one_and_shows_loss_lr_and_throughput(synthetic_store: Path, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    class Look(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            bar = next(c for c in trainer.callbacks if isinstance(c, TrainProgressBar))
            seen["description"] = bar._get_train_description(trainer.current_epoch)
            seen["metrics"] = bar.get_metrics(trainer, pl_module)

    cfg = load_config(None, [f"data.store={synthetic_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=1",
                             "trainer.progress=rich", *TINY])
    fit(cfg, callbacks=[Look()])
    assert seen["description"] == "Epoch 1/1"
    assert set(seen["metrics"]) == {"loss", "lr", "samples/s"}  # type: ignore[arg-type]
    assert float(seen["metrics"]["samples/s"]) > 0  # type: ignore[index]
