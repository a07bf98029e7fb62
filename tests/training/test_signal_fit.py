"""Signals through the real CLI: fit with configs/ucr.yaml, evaluate beside the ROCKET-family baselines, predict from
.ts and Capfinder CSVs, every schedule (plateau, triangular2 cyclic, SGDR) and task/store mismatches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from aeon.datasets import load_from_ts_file

from taxotrain.cli import main
from taxotrain.config import Config, OptimConfig, load_config
from taxotrain.data.signals import ucr_folder
from taxotrain.training.schedules import build_scheduler
from tests.conftest import SIGNAL_FAST


def test_signal_run_folder_and_report(signal_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Config.model_validate(yaml.safe_load((signal_run / "config.yaml").read_text()))
    assert cfg.task == "signal" and cfg.model.backbone == "resnet1d"
    ckpt = torch.load(signal_run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["taxotrain"]["spec"]["kind"] == "signal" and ckpt["taxotrain"]["spec"]["length"] == 150
    with (signal_run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and 0 <= float(rows[-1]["val/class/top1"]) <= 1
    assert main(["evaluate", str(signal_run)]) == 0
    assert "baselines top1 MiniRocket" in capsys.readouterr().out
    metrics = json.loads((signal_run / "metrics.json").read_text())
    assert metrics["evaluation"]["records"] == 150 and 0 <= metrics["ranks"]["class"]["top1"] <= 1
    assert metrics["baseline"]["minirocket"]["top1"] > 0.9  # MiniRocket is a strong baseline on GunPoint
    assert metrics["baseline"]["minirocket"]["records"] == 150  # the same test split as the network
    page = (signal_run / "report.html").read_text()
    assert "MiniRocket" in page and "series of 150 samples" in page and "confusion_class.png" in page
    assert (signal_run / "confusion_class.png").is_file() and (signal_run / "per_class.csv").is_file()


def test_predict_ts_and_capfinder_csv_with_a_bad_row(signal_run: Path, tmp_path: Path) -> None:
    ts = ucr_folder("GunPoint") / "GunPoint_TEST.ts"
    out = tmp_path / "ts.csv"
    assert main(["predict", str(signal_run), str(ts), "--out", str(out), "--topk", "2"]) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 150 and [r["read_id"] for r in rows[:3]] == ["0", "1", "2"]
    assert set(rows[0]) >= {"read_id", "class", "class_score", "class_top1", "class_top2_score", "error"}
    # predict reads the official TEST file as prepare stored it: each row agrees with evaluate on the test split
    assert main(["evaluate", str(signal_run), "--no-baseline"]) == 0
    saved = np.load(signal_run / "predictions_test.npz")
    names = ["1", "2"]
    assert [r["class"] for r in rows] == [names[i] for i in saved["decoded"][:, 0]]
    np.testing.assert_allclose([float(r["class_score"]) for r in rows], saved["probs_class"].max(1), atol=1e-5)
    assert [r["true_class"] for r in rows] == [names[i] for i in saved["labels"][:, 0]]

    X, y = load_from_ts_file(str(ts))
    capfinder = tmp_path / "reads.csv"
    with capfinder.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["read_id", "cap_class", "timeseries"])
        writer.writerow(["read_a", y[0], ",".join(map(str, X[0, 0]))])
        writer.writerow(["read_b", y[1], "1.0,oops,2.0"])
        writer.writerow(["read_c", y[2], ",".join(map(str, np.tile(X[2, 0], 3)))])  # longer: truncated like prepare
    out = tmp_path / "caps.csv"
    assert main(["predict", str(signal_run), str(capfinder), "--out", str(out)]) == 0
    with out.open() as fh:
        rows = {r["read_id"]: r for r in csv.DictReader(fh)}
    assert rows["read_a"]["class"] == next(r["class"] for r in csv.DictReader((tmp_path / "ts.csv").open())
                                          if r["read_id"] == "0")
    assert rows["read_b"]["error"].startswith("non-numeric value 'oops'") and rows["read_b"]["class"] == ""
    assert rows["read_c"]["class"] and rows["read_a"]["true_class"] == str(y[0])


@pytest.mark.parametrize("schedule", ["plateau", "cyclic", "sgdr"])
def test_every_schedule_trains(schedule: str, gunpoint_store: Path, tmp_path: Path) -> None:
    run = tmp_path / schedule
    threads = torch.get_num_threads()
    assert main(["fit", "task=signal", f"data.store={gunpoint_store}", f"run.dir={run}", "trainer.max_epochs=2",
                 f"optim.schedule={schedule}", "optim.cycle_epochs=1", *SIGNAL_FAST]) == 0
    with (run / "metrics.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert torch.get_num_threads() == threads  # trainer.cpu_threads=1 holds only for the fit
    if schedule == "plateau":
        assert main(["evaluate", str(run), "--no-baseline"]) == 0
        assert "baseline" not in json.loads((run / "metrics.json").read_text())


def _lrs(schedule: str, steps: int, **kw: float) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = OptimConfig(schedule=schedule, lr=1.0, min_lr_ratio=0.0, **kw)
    sched = build_scheduler(opt, cfg, per_epoch=10, monitor="val/loss", mode="min", cosine_factor=lambda: 1.0)[
        "scheduler"]
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(1.0) if schedule == "plateau" else sched.step()
    return out


def test_schedules_follow_capfinder_shapes() -> None:
    cyc = _lrs("cyclic", 80, cycle_epochs=1)  # half cycle = 10 steps; triangular2 halves each cycle's height
    assert cyc[10] == pytest.approx(1.0) and cyc[30] == pytest.approx(0.5) and cyc[50] == pytest.approx(0.25)
    sgdr = _lrs("sgdr", 80, cycle_epochs=1, cycle_mult=2)  # restarts after 10, then 20 more steps
    assert sgdr[0] == sgdr[10] == sgdr[30] == pytest.approx(1.0) and sgdr[29] < 0.05
    plateau = _lrs("plateau", 6, plateau_patience=1, plateau_factor=0.5)  # stepped per epoch on a flat metric
    assert plateau[:2] == [1.0, 1.0] and plateau[-1] < 1.0
    assert build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), OptimConfig(schedule="plateau"),
                           1, "val/class/top1", "max", lambda: 1.0)["monitor"] == "val/class/top1"


def test_init_config_signal_and_task_store_mismatch(gunpoint_store: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-config", "--task", "signal"]) == 0
    (tmp_path / "sig.yaml").write_text(capsys.readouterr().out)
    cfg = load_config(tmp_path / "sig.yaml")
    assert cfg.task == "signal" and cfg.model.backbone == "resnet1d" and cfg.prepare.znorm
    assert "time_warp" in (tmp_path / "sig.yaml").read_text()
    assert main(["fit", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 'r'}", *SIGNAL_FAST]) == 2
    err = capsys.readouterr().err
    assert "is a signal store" in err and "set task: signal" in err and err.count("\n") == 1
    assert main(["fit", "task=signal", "model.backbone=resnet50", f"data.store={gunpoint_store}",
                 f"run.dir={tmp_path / 'r2'}"]) == 2
    assert "unknown signal network 'resnet50'" in capsys.readouterr().err
