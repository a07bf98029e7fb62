"""Progressive learning: stage expansion, LR continuity across stages, the size/batch actually trained per epoch,
regularisation per stage, resume inside a later stage, and the GPU batch probe's search."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from taxotrain.cli import main
from taxotrain.config import ConfigError, load_config
from taxotrain.stages import expand_stages, stage_at
from taxotrain.training.engine import fit
from taxotrain.training.progressive import probe_batch_size
from taxotrain.training.schedules import warmup_cosine
from tests.conftest import FAST


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_compact_form_expands_to_growing_sizes_and_regularisation() -> None:
    cfg = load_config(None, ["progressive.start_size=24", "progressive.num_stages=3", "data.image_size=48",
                             "trainer.max_epochs=7", "data.augment.magnitude=15", "mix.mixup_alpha=0.3",
                             "model.drop_rate=0.3", "progressive.start_regularization=0.2"])
    stages = expand_stages(cfg)
    assert [(s.start, s.end) for s in stages] == [(0, 2), (2, 5), (5, 7)]  # every epoch in exactly one stage
    assert [s.image_size for s in stages] == [24, 32, 48]  # 36 rounds to a multiple of 8; the last is the full size
    assert [s.magnitude for s in stages] == [3, 9, 15]
    assert [round(s.mixup_alpha, 3) for s in stages] == [0.06, 0.18, 0.3]
    assert stages[-1].drop_rate == pytest.approx(0.3)
    assert all(s.batch_size == 64 and s.lr_scale == 1.0 for s in stages)
    assert stage_at(stages, 4.99).index == 1 and stage_at(stages, 99).index == 2


def test_compact_batch_scaling_grows_batch_and_lr_for_small_images() -> None:
    cfg = load_config(None, ["progressive.start_size=32", "progressive.num_stages=2", "data.image_size=64",
                             "data.batch_size=32", "trainer.max_epochs=4", "progressive.scale_batch=true"])
    small, full = expand_stages(cfg)
    assert (small.batch_size, full.batch_size) == (128, 32)
    assert small.lr_scale == pytest.approx(2.0) and full.lr_scale == 1.0


def test_explicit_stages_by_epochs_and_by_fraction() -> None:
    by_epochs = expand_stages(load_config(None, [
        "trainer.max_epochs=6", "data.image_size=48",
        "progressive.stages=[{epochs: 2, image_size: 32, batch_size: 128, lr_scale: 1.5}, {epochs: 2}]"]))
    assert [(s.start, s.end, s.image_size, s.batch_size) for s in by_epochs] == [(0, 2, 32, 128), (2, 6, 48, 64)]
    by_fraction = expand_stages(load_config(None, [
        "trainer.max_epochs=10", "progressive.stages=[{fraction: 0.3, image_size: 16}, {fraction: 0.7}]"]))
    assert [(s.start, s.end) for s in by_fraction] == [(0, 3), (3, 10)]
    plain = expand_stages(load_config(None, ["trainer.max_epochs=3"]))
    assert len(plain) == 1 and (plain[0].start, plain[0].end, plain[0].image_size) == (0, 3, 64)


@pytest.mark.parametrize("override, words", [
    ("progressive.stages=[{epochs: 4}, {epochs: 4}]", "max_epochs"),
    ("progressive.stages=[{fraction: 0.5}, {fraction: 0.2}]", "sum to 1"),
    ("progressive.stages=[{epochs: 2}, {fraction: 0.5}]", "either epochs or fraction"),
    ("progressive.stages=[{epochs: 2, image_sise: 32}]", "image_sise"),
])
def test_bad_stages_are_one_line_errors(override: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        expand_stages(load_config(None, ["trainer.max_epochs=6", override]))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_lr_schedule_is_continuous_across_stage_boundaries() -> None:
    # at a stage boundary the cosine carries on from where it was: no restart, no jump beyond one step's change
    per_epoch = 50
    lrs = [warmup_cosine(s / per_epoch, 0.5, 6.0, 0.01, "cosine") for s in range(6 * per_epoch)]
    steps = [abs(b - a) for a, b in zip(lrs, lrs[1:], strict=False)]
    assert max(steps[per_epoch:]) < 0.05 and lrs[-1] < 0.05 and max(lrs) == pytest.approx(1.0, abs=0.01)


class Recorder(L.Callback):
    """What training really used: input shape and LR of every step."""

    def __init__(self) -> None:
        self.seen: dict[int, set[tuple[int, int]]] = {}
        self.lrs: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        x = batch["input"]
        self.seen.setdefault(trainer.current_epoch, set()).add((int(x.shape[-1]), int(x.shape[0])))
        self.lrs.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))


def test_fit_trains_each_epoch_at_its_stage_size_and_batch(plankton_store: Path, tmp_path: Path) -> None:
    stages = ("progressive.stages=[{epochs: 1, image_size: 16, batch_size: 64, drop_rate: 0.0}, "
              "{epochs: 1, image_size: 24, batch_size: 32, drop_rate: 0.2}, {epochs: 1, image_size: 32}]")
    cfg = load_config(None, [f"data.store={plankton_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=3",
                             "model.drop_rate=0.4", "optim.warmup_epochs=0", stages, *FAST])
    rec = Recorder()
    fit(cfg, callbacks=[rec])
    # every full batch of an epoch has the stage's image size and batch size (data.batch_size=32 in FAST)
    assert {e: {s for s, b in v} for e, v in rec.seen.items()} == {0: {16}, 1: {24}, 2: {32}}
    assert {e: max(b for s, b in v) for e, v in rec.seen.items()} == {0: 64, 1: 32, 2: 32}
    rows = _rows(tmp_path / "r")
    assert [(int(r["image_size"]), int(r["batch_size"]), int(r["stage"])) for r in rows] == [
        (16, 64, 1), (24, 32, 2), (32, 32, 3)]
    # one cosine over all three epochs, no restart at the stage boundaries (the batch count per epoch changes)
    lrs = [lr for _, lr in rec.lrs]
    assert all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:], strict=False)), "LR rose: the schedule restarted"
    first_of = {e: next(lr for ep, lr in rec.lrs if ep == e) for e in (1, 2)}
    last_of = {e: [lr for ep, lr in rec.lrs if ep == e][-1] for e in (0, 1)}
    assert first_of[1] == pytest.approx(last_of[0], rel=0.2) and first_of[2] == pytest.approx(last_of[1], rel=0.35)
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["taxotrain"]["spec"]["image_size"] == 32  # evaluation and prediction use the final size


class StopAfterEpoch(L.Callback):
    """Interrupts a fit once epoch ``n`` is saved (what a crash between epochs looks like)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.n:
            raise SystemExit("interrupted")


def test_resume_lands_inside_the_later_stage(plankton_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    args = [f"data.store={plankton_store}", f"run.dir={run}", "trainer.max_epochs=4",
            "progressive.start_size=16", "progressive.num_stages=2", "progressive.size_multiple=4", *FAST]
    with pytest.raises(SystemExit):
        fit(load_config(None, args), callbacks=[StopAfterEpoch(3)])
    assert [int(r["image_size"]) for r in _rows(run)] == [16, 16, 32]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    saved_lr = saved["optimizer_states"][0]["param_groups"][0]["lr"]
    rec = Recorder()
    fit(load_config(run / "config.yaml", []), resume="auto", callbacks=[rec])
    assert list(rec.seen) == [3] and {s for s, _ in rec.seen[3]} == {32}  # only the last epoch, at stage 2's size
    assert [int(r["image_size"]) for r in _rows(run)] == [16, 16, 32, 32]
    assert rec.lrs[0][1] == pytest.approx(saved_lr, rel=1e-6)  # the schedule carries on where it stopped


def test_stage_regularisation_reaches_the_model(plankton_store: Path, tmp_path: Path) -> None:
    seen: list[tuple[float, float, float]] = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                drop = next(m.p for m in pl_module.model.head.modules() if isinstance(m, torch.nn.Dropout))
                dp = [m.drop_prob for m in pl_module.modules() if type(m).__name__ == "DropPath"]
                seen.append((pl_module.task.objective.mixer.cfg.mixup_alpha, drop, max(dp)))

    cfg = load_config(None, [f"data.store={plankton_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=2",
                             "progressive.start_size=16", "progressive.num_stages=2", "progressive.size_multiple=4",
                             "progressive.start_regularization=0.5", "mix.mixup_alpha=0.4", "model.drop_rate=0.2",
                             "model.drop_path_rate=0.1", *FAST])
    fit(cfg, callbacks=[Probe()])
    assert seen[0] == pytest.approx((0.2, 0.1, 0.05)) and seen[1] == pytest.approx((0.4, 0.2, 0.1))


def test_auto_batch_probe_finds_the_largest_batch_that_fits() -> None:
    def fits_up_to(limit: int):
        def try_batch(n: int) -> None:
            if n > limit:
                raise torch.OutOfMemoryError("CUDA out of memory")
        return try_batch

    assert probe_batch_size(fits_up_to(300), start=32, cap=4096) == 256
    assert probe_batch_size(fits_up_to(10_000), start=32, cap=1000) == 512
    with pytest.raises(RuntimeError, match="does not fit"):
        probe_batch_size(fits_up_to(16), start=32, cap=4096)


def test_auto_batch_on_cpu_falls_back_to_the_configured_batch(plankton_store: Path, tmp_path: Path) -> None:
    code = main(["fit", f"data.store={plankton_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=1",
                 "progressive.stages=[{epochs: 1, batch_size: auto}]", *FAST])
    assert code == 0 and int(_rows(tmp_path / "r")[0]["batch_size"]) == 32


def test_compile_switch_keeps_checkpoints_plain(plankton_store: Path, tmp_path: Path) -> None:
    code = main(["fit", f"data.store={plankton_store}", f"run.dir={tmp_path / 'r'}", "trainer.max_epochs=1",
                 "trainer.compile=true", "trainer.compile_backend=eager", "trainer.limit_train_batches=2", *FAST])
    assert code == 0
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)  # loads into an uncompiled model for evaluate/predict
