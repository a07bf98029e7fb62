"""Temperature scaling on val: a known temperature is recovered; `fit trainer.calibrate=true` and `taxotrain
calibrate` write it into the checkpoints, evaluate/predict/export then use it, top-1 does not move, val log loss
falls; old checkpoints load uncalibrated; closed-form runs and ensembles are refused in one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from taxotrain.cli import main
from taxotrain.data.signals import ucr_folder
from taxotrain.run import load_run
from taxotrain.training.calibration import fit_rank_temperatures, val_logits
from taxotrain.training.module import TaskModule
from tests.conftest import TINY


def test_a_known_temperature_is_recovered_and_unknown_labels_are_left_out() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, size=(20_000, 5))  # calibrated logits: labels drawn from softmax(z)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    targets = np.stack([y, np.where(rng.random(len(y)) < 0.5, -1, y)], axis=1)  # the second rank: half unknown
    fitted = fit_rank_temperatures({"a": 3.0 * z, "b": 0.5 * z}, targets)  # over- and under-confident
    assert fitted["a"]["temperature"] == pytest.approx(3.0, rel=0.05)
    assert fitted["b"]["temperature"] == pytest.approx(0.5, rel=0.05) and fitted["b"]["records"] == (
        targets[:, 1] >= 0).sum()
    for rank in "ab":
        assert fitted[rank]["ece_after"] < 0.02 < fitted[rank]["ece_before"]
        assert fitted[rank]["nll_after"] < fitted[rank]["nll_before"]


def test_fit_with_calibrate_writes_the_temperature_that_evaluate_predict_and_export_use(
        synthetic_store: Path, synthetic_set: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "cal"
    assert main(["fit", f"data.store={synthetic_store}", f"run.dir={run}", "trainer.max_epochs=2", *TINY,
                 "trainer.calibrate=true"]) == 0
    assert "calibrated on val: family T" in capsys.readouterr().out
    loaded = load_run(run)
    info = loaded.metadata["calibration"]
    temperature = loaded.model.temperature.clone()
    assert info["split"] == "val" and list(info["ranks"]) == ["family", "genus", "species"]
    assert temperature.tolist() == pytest.approx([info["ranks"][r]["temperature"] for r in info["ranks"]])
    assert not torch.allclose(temperature, torch.ones(3))
    assert all(r["nll_after"] <= r["nll_before"] + 1e-9 for r in info["ranks"].values())
    assert load_run(run, "last").metadata["calibration"]["ranks"]["family"]["records"] > 0

    # the model divides each rank's raw logits by its temperature
    logits, _ = val_logits(load_run(run), load_run(run).open_store(), 64, 0)  # temperatures reset to 1 here
    x = torch.stack([loaded.task.dataset(loaded.open_store(), "val")[i]["input"] for i in range(4)])
    with torch.no_grad():
        out = loaded.model.eval()(input=x)
    for r, rank in enumerate(loaded.taxonomy.ranks):
        np.testing.assert_allclose(out[rank].numpy(), logits[rank][:4] / temperature[r].item(), rtol=1e-4,
                                   atol=1e-5)

    # evaluate and predict see the calibrated probabilities; top-1 is what the uncalibrated model gives
    assert main(["evaluate", str(run), "--no-baseline"]) == 0
    calibrated = json.loads((run / "metrics.json").read_text())
    saved = np.load(run / "predictions_test.npz")
    raw = tmp_path / "raw"
    shutil.copytree(run, raw)
    ckpt = torch.load(raw / "checkpoints" / "best.ckpt", weights_only=True)
    del ckpt["state_dict"]["model.temperature"]  # a checkpoint from before temperatures: loads as T = 1
    torch.save(ckpt, raw / "checkpoints" / "best.ckpt")
    assert torch.equal(load_run(raw).model.temperature, torch.ones(3))
    assert main(["evaluate", str(raw), "--no-baseline"]) == 0
    uncalibrated = json.loads((raw / "metrics.json").read_text())
    for rank in loaded.taxonomy.ranks:
        assert calibrated["ranks"][rank]["top1"] == uncalibrated["ranks"][rank]["top1"]
    assert not np.allclose(saved["probs_species"], np.load(raw / "predictions_test.npz")["probs_species"])

    # predict on image files: the uncalibrated run's top species, with calibrated scores (the consistent decoding
    # of all ranks together may move, as the ranks' temperatures differ)
    some = [str(p) for p in sorted(synthetic_set[0].rglob("*_00[01].jpg"))[:6]]
    rows = {}
    for name, folder in (("calibrated", run), ("raw", raw)):
        assert main(["predict", str(folder), *some, "--out", str(tmp_path / f"{name}.csv")]) == 0
        with (tmp_path / f"{name}.csv").open() as fh:
            rows[name] = list(csv.DictReader(fh))
    assert [r["species_top1"] for r in rows["calibrated"]] == [r["species_top1"] for r in rows["raw"]]
    assert [r["species_top1_score"] for r in rows["calibrated"]] != [r["species_top1_score"] for r in rows["raw"]]
    # the exported bundle (its parity check against the calibrated model passes) carries the temperature
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--records", "16"]) == 0


def test_calibrate_on_a_finished_run_keeps_top1_and_lowers_val_log_loss(
        signal_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "gp"
    shutil.copytree(signal_run, run)
    assert main(["calibrate", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("calibrated on val: class T") and "best.ckpt, last.ckpt" in out
    info = load_run(run).metadata["calibration"]["ranks"]["class"]
    assert info["records"] == 5 and info["nll_after"] <= info["nll_before"]
    # predictions on a real file: the same classes as the uncalibrated run, other scores
    series = str(ucr_folder("GunPoint") / "GunPoint_TEST.ts")
    rows = {}
    for name, folder in (("before", signal_run), ("after", run)):
        assert main(["predict", str(folder), series, "--out", str(tmp_path / f"{name}.csv")]) == 0
        with (tmp_path / f"{name}.csv").open() as fh:
            rows[name] = list(csv.DictReader(fh))
    assert [r["class"] for r in rows["before"]] == [r["class"] for r in rows["after"]]
    assert [r["class_score"] for r in rows["before"]] != [r["class_score"] for r in rows["after"]]


def test_training_starts_from_temperature_one(synthetic_run: Path) -> None:
    loaded = load_run(synthetic_run)
    loaded.model.temperature.fill_(2.0)  # as a calibrated checkpoint resumed
    module = TaskModule(loaded.task, loaded.model)
    module.on_fit_start()
    assert torch.equal(loaded.model.temperature, torch.ones(3))
    # and in the checkpoint state it resumes from (what an EMA copy is restored from too)
    checkpoint = {"state_dict": {"model.temperature": torch.full((3,), 2.0), "model.prior_offset0": torch.ones(2)}}
    module.on_load_checkpoint(checkpoint)
    assert torch.equal(checkpoint["state_dict"]["model.temperature"], torch.ones(3))
    assert torch.equal(checkpoint["state_dict"]["model.prior_offset0"], torch.ones(2))  # adjustments stay


def test_closed_form_runs_and_ensembles_are_refused(gunpoint_store: Path, signal_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    quiet = ["task=signal", "trainer.cpu_threads=1", "logging.mlflow=false", "logging.tensorboard=false",
             "trainer.progress=none"]
    assert main(["fit", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 'r'}", *quiet,
                 "model.backbone=minirocket", "trainer.calibrate=true"]) == 2
    err = capsys.readouterr().err
    assert "trainer.calibrate" in err and "leave-one-out" in err and err.count("\n") == 1
    assert main(["fit", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 'r'}", *quiet,
                 "model.backbone=minirocket"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "fitted in closed form" in err and err.count("\n") == 1
    assert main(["ensemble", str(signal_run), str(tmp_path / "r"), "--out", str(tmp_path / "e")]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "is an ensemble" in err and err.count("\n") == 1
