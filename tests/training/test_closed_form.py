"""ROCKET-family runs through the real CLI on GunPoint: a fit is one closed-form epoch that leaves a normal run
folder; evaluate puts every candidate beside it; predict agrees with evaluate; export refuses in one line;
``model.backbone: auto`` chooses without looking at test; ensembles average their members; tune can select."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from taxotrain.cli import main
from taxotrain.config import load_config
from taxotrain.data.dataset import hide_labels, stack_dataset
from taxotrain.data.signals import ucr_folder
from taxotrain.data.store import Store
from taxotrain.evaluation.report import fit_time
from taxotrain.run import load_run
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import create_task
from taxotrain.training.select import select_backbone

QUIET = ["task=signal", "trainer.cpu_threads=1", "logging.mlflow=false", "logging.tensorboard=false",
         "trainer.progress=none"]


def _fit(store: Path, run: Path, *extra: str) -> int:
    return main(["fit", f"data.store={store}", f"run.dir={run}", *QUIET, *extra])


@pytest.fixture(scope="module")
def rocket_run(gunpoint_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("rocket") / "mrh"
    assert _fit(gunpoint_store, run, "model.backbone=multirocket_hydra") == 0
    return run


def test_a_closed_form_fit_leaves_a_run_that_evaluate_predict_and_export_take(
        rocket_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (rocket_run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and float(rows[0]["val/class/top1"]) == 1.0 and float(rows[0]["seconds"]) > 0
    info = torch.load(rocket_run / "checkpoints" / "best.ckpt", weights_only=True)["taxotrain"]
    assert info["config"]["model"]["backbone"] == "multirocket_hydra"
    assert info["closed_form"]["ranks"]["class"]["loo_top1"] > 0.9 and info["closed_form"]["records"] == 45

    assert main(["evaluate", str(rocket_run)]) == 0
    assert "baselines top1 MiniRocket" in capsys.readouterr().out
    metrics = json.loads((rocket_run / "metrics.json").read_text())
    assert metrics["ranks"]["class"]["top1"] > 0.95
    assert list(metrics["baseline"]) == ["minirocket", "hydra", "multirocket", "multirocket_hydra", "mean"]
    assert all(b["records"] == 150 and b["seconds"] > 0 for b in metrics["baseline"].values())
    # the baseline of the same name is the same model, fitted the same way
    assert metrics["baseline"]["multirocket_hydra"]["top1"] == pytest.approx(metrics["ranks"]["class"]["top1"])
    assert metrics["fit"]["epochs"] == 1 and metrics["fit"]["seconds"] > 0
    page = (rocket_run / "report.html").read_text()
    assert "MultiRocket-Hydra (54,848 features)" in page and "this run" in page

    out = tmp_path / "pred.csv"
    assert main(["predict", str(rocket_run), str(ucr_folder("GunPoint") / "GunPoint_TEST.ts"), "--out", str(out)]) == 0
    with out.open() as fh:
        predicted = [r["class"] for r in csv.DictReader(fh)]
    saved = np.load(rocket_run / "predictions_test.npz")
    assert predicted == [["1", "2"][i] for i in saved["decoded"][:, 0]]

    capsys.readouterr()
    assert main(["export", str(rocket_run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert "fitted in closed form" in err and err.count("\n") == 1 and not (tmp_path / "bundle").exists()


def test_baselines_fit_ridges_on_the_runs_labels_whatever_its_head(gunpoint_store: Path) -> None:
    # a network run with its own settings, a flat head and half its train labels hidden: the baselines keep their
    # own defaults and ridge heads, and see the labels the run saw
    cfg = load_config(None, [f"data.store={gunpoint_store}", *QUIET, "model.backbone=resnet1d", "model.head=flat",
                             "model.kwargs={width: 8}", "data.hide_labels={class: 0.5}"])
    store = Store(gunpoint_store)
    found = create_task(cfg, store=store).baselines(store, "test")
    labelled = int((hide_labels(store, {"class": 0.5}, cfg.run.seed)[store.splits["train"], 0] >= 0).sum())
    assert labelled < len(store.splits["train"])
    assert list(found) == ["minirocket", "hydra", "multirocket", "multirocket_hydra", "mean"]
    assert all(b["train_records"] == labelled and b["top1"] > 0.8 for b in found.values())


def test_a_model_that_cannot_take_the_store_is_skipped_with_the_reason(tmp_path: Path) -> None:
    short = tmp_path / "short.h5"  # GunPoint cut to 9 points: MultiRocket needs 10
    assert main(["prepare", str(ucr_folder("GunPoint")), "--target-length", "9", "--out", str(short)]) == 0
    cfg = load_config(None, [f"data.store={short}", *QUIET, "model.backbone=resnet1d"])
    found = create_task(cfg, store=Store(short)).baselines(Store(short), "test")
    assert found["multirocket"]["top1"] is None and "at least 10 points" in found["multirocket"]["skipped"]
    assert found["minirocket"]["top1"] is not None and found["mean"]["name"] == "mean of the 2"


def test_settings_that_need_gradient_training_are_refused(gunpoint_store: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for backbone, setting in (("hydra", "model.head=conditional"), ("hydra", "trainer.ema=true"),
                              ("hydra", "mix.mixup_alpha=0.2"), ("auto", "mix.mixup_alpha=0.2"),
                              ("mean", "trainer.ema=true")):
        assert _fit(gunpoint_store, tmp_path / "r", f"model.backbone={backbone}", setting) == 2
        err = capsys.readouterr().err
        assert "fitted in closed form" in err and setting.split("=")[0] in err and err.count("\n") == 1
        # refused before anything was fitted or written (auto would otherwise fit every candidate first)
        assert not (tmp_path / "r" / "checkpoints").exists() and not (tmp_path / "r" / "selection.json").exists()


RECIPE = Path(__file__).resolve().parents[2] / "configs" / "ucr_best.yaml"


def test_the_recipe_is_the_mean_of_the_four_each_as_fitted_alone(rocket_run: Path, gunpoint_store: Path,
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "recipe"  # on the train split, as the standalone run was fitted (the recipe adds val)
    assert main(["fit", "--config", str(RECIPE), f"data.store={gunpoint_store}", f"run.dir={run}", *QUIET,
                 "data.fit_on=train"]) == 0
    recipe, alone = load_run(run), load_run(rocket_run)  # the recipe's first member is multirocket_hydra
    assert len(recipe.model.members) == 4
    x = torch.from_numpy(np.array(Store(gunpoint_store).data()[:60]))
    with torch.no_grad():
        members = [m.eval()(input=x)["class"].softmax(-1) for m in recipe.model.members]
        np.testing.assert_allclose(members[0], alone.model.eval()(input=x)["class"].softmax(-1), atol=1e-6)
        np.testing.assert_allclose(recipe.model.eval()(input=x)["class"].softmax(-1), torch.stack(members).mean(0),
                                   atol=1e-6)
    info = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["taxotrain"]  # arrays only, no pickle
    assert info["config"]["model"]["backbone"] == "mean" and info["closed_form"]["ranks"]["class"]["loo_top1"] > 0.9


def test_auto_chooses_on_train_and_val_only(gunpoint_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "auto"
    auto = [*QUIET, "model.backbone=auto"]
    assert main(["fit", "--config", str(RECIPE), f"data.store={gunpoint_store}", f"run.dir={run}", *auto]) == 0
    selection = json.loads((run / "selection.json").read_text())
    assert [c["backbone"] for c in selection["candidates"]] == ["mean", "multirocket_hydra", "multirocket",
                                                                "minirocket", "hydra"]
    best = max(c["score"] for c in selection["candidates"])
    assert selection["chosen"] == next(c["backbone"] for c in selection["candidates"] if c["score"] == best)
    assert load_config(run / "config.yaml").model.backbone == selection["chosen"]
    assert load_run(run).config.model.backbone == selection["chosen"]
    fitted = fit_time(RunPaths(run))  # what evaluate reports as this run's fit time: the choice's included
    assert fitted["chosen"] == selection["chosen"] and fitted["selection_seconds"] == pytest.approx(
        sum(c["seconds"] for c in selection["candidates"][1:]), abs=0.01) and fitted["epochs"] == 1
    assert selection["candidates"][0]["seconds"] == pytest.approx(fitted["selection_seconds"], abs=0.05)  # mean's

    # --resume keeps the recorded choice: nothing is chosen again
    written = (run / "selection.json").stat().st_mtime_ns
    assert main(["fit", "--config", str(RECIPE), f"data.store={gunpoint_store}", f"run.dir={run}", *auto,
                 "--resume", "auto"]) == 0
    assert (run / "selection.json").stat().st_mtime_ns == written
    assert load_run(run).config.model.backbone == selection["chosen"]

    # the same store with its test labels shuffled: the scores and the choice do not move
    shuffled = tmp_path / "shuffled.h5"
    shutil.copy(gunpoint_store, shuffled)
    with h5py.File(shuffled, "r+") as f:
        test = f["splits/test"][()]
        labels = f["labels"][()]
        labels[test] = np.random.default_rng(0).permutation(labels[test])
        f["labels"][...] = labels
    assert not np.array_equal(Store(shuffled).labels, Store(gunpoint_store).labels)
    cfg = load_config(RECIPE, [f"data.store={shuffled}", f"run.dir={tmp_path / 'again'}", *auto])
    assert select_backbone(cfg, Store(shuffled), RunPaths(tmp_path / "again")).model.backbone == selection["chosen"]
    again = json.loads((tmp_path / "again" / "selection.json").read_text())
    assert [(c["backbone"], c["score"]) for c in again["candidates"]] == [
        (c["backbone"], c["score"]) for c in selection["candidates"]]


def test_fit_on_train_and_val_fits_the_val_records_too(gunpoint_store: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store, run = Store(gunpoint_store), tmp_path / "trva"
    n_train, n_val = len(store.splits["train"]), len(store.splits["val"])
    assert _fit(gunpoint_store, run, "model.backbone=minirocket", "data.fit_on=train+val") == 0
    assert "the val figures are in-sample" in capsys.readouterr().out
    info = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["taxotrain"]
    assert info["closed_form"]["records"] == n_train + n_val and info["closed_form"]["fit_on"] == "train+val"

    # the run's model is the same model fitted by hand on the train and val series together
    cfg = load_config(run / "config.yaml")
    task = create_task(cfg, store=store)
    x_train, y_train = stack_dataset(task.dataset(store, "train"))
    x_val, y_val = stack_dataset(task.dataset(store, "val"))
    by_hand = task.build_model(pretrained=False)
    task.fit_closed_form(by_hand, torch.cat([x_train, x_val]), np.concatenate([y_train, y_val]))
    x = torch.from_numpy(np.array(store.data()[store.splits["test"][:40]]))
    with torch.no_grad():
        np.testing.assert_allclose(load_run(run).model.eval()(input=x)["class"].softmax(-1),
                                   by_hand.eval()(input=x)["class"].softmax(-1), atol=1e-6)

    # evaluate's baselines are fitted on the same records, so the baseline of the same name is the run
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline"]["minirocket"]["train_records"] == n_train + n_val
    assert metrics["baseline"]["minirocket"]["top1"] == pytest.approx(metrics["ranks"]["class"]["top1"])

    # auto scores every labelled record by leave-one-out: no val records are held apart
    auto = tmp_path / "auto"
    assert _fit(gunpoint_store, auto, "model.backbone=auto", "model.candidates=[minirocket, hydra]",
                "data.fit_on=train+val") == 0
    rows = json.loads((auto / "selection.json").read_text())["candidates"]
    assert all(r["train_records"] == n_train + n_val and r["val_records"] == 0 and r["val_top1"] is None
               for r in rows)

    # networks pick their checkpoint on val, and tune scores trials on it: both refuse it in one line
    capsys.readouterr()
    assert _fit(gunpoint_store, tmp_path / "net", "model.backbone=resnet1d", "data.fit_on=train+val") == 2
    assert _fit(gunpoint_store, tmp_path / "net", "model.backbone=resnet1d", "data.fit_on=train+val") == 2
    err = capsys.readouterr().err
    assert "data.fit_on" in err and "picks its checkpoint on val" in err and err.count("\n") == 2
    assert not (tmp_path / "net" / "checkpoints").exists()
    space = "tune.space={model.backbone: {type: categorical, choices: [minirocket, hydra]}}"
    assert main(["tune", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 's'}", *QUIET, space,
                 "data.fit_on=train+val"]) == 2
    err = capsys.readouterr().err
    assert "data.fit_on" in err and "scores the trials" in err and err.count("\n") == 1


def test_candidates_must_be_closed_form_model_names(gunpoint_store: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for candidates, said in (("[resnet1d, minirocket]", "trained by gradient"), ("[mean, hydra]", "not mean")):
        assert _fit(gunpoint_store, tmp_path / "r", "model.backbone=mean", f"model.candidates={candidates}") == 2
        err = capsys.readouterr().err
        assert said in err and "model.candidates" in err and err.count("\n") == 1
    assert _fit(gunpoint_store, tmp_path / "r", "model.backbone=mean", "model.kwargs={n_kernels: 4}") == 2
    err = capsys.readouterr().err  # n_kernels means something different to each candidate
    assert "model.kwargs" in err and "own defaults" in err and err.count("\n") == 1


def test_an_ensemble_averages_its_members(rocket_run: Path, signal_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", str(signal_run), str(rocket_run), "--out", str(out)]) == 0
    ensemble, members = load_run(out), [load_run(signal_run), load_run(rocket_run)]
    x = torch.from_numpy(np.array(Store(load_config(out / "config.yaml").data.store).data()[:40]))

    def probs(run) -> np.ndarray:  # noqa: ANN001
        return run.task.predict_step(run.task.inference_module(run.model), {"input": x})["class"]

    np.testing.assert_allclose(probs(ensemble), (probs(members[0]) + probs(members[1])) / 2, atol=1e-6)
    assert main(["evaluate", str(out), "--no-baseline"]) == 0
    assert json.loads((out / "metrics.json").read_text())["ranks"]["class"]["top1"] > 0.9
    assert json.loads((out / "ensemble.json").read_text())["members"][1]["backbone"] == "multirocket_hydra"

    capsys.readouterr()
    assert main(["ensemble", str(signal_run), str(rocket_run), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    other = tmp_path / "ipd.h5"
    assert main(["prepare", str(ucr_folder("ItalyPowerDemand")), "--znorm", "--out", str(other)]) == 0
    assert _fit(other, tmp_path / "ipd", "model.backbone=minirocket") == 0
    capsys.readouterr()
    assert main(["ensemble", str(rocket_run), str(tmp_path / "ipd"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "input spec, store" in err and not (tmp_path / "bad").exists()


def test_tune_can_choose_a_rocket_family_model(gunpoint_store: Path, tmp_path: Path) -> None:
    space = "tune.space={model.backbone: {type: categorical, choices: [minirocket, hydra]}}"
    assert main(["tune", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 's'}", *QUIET, space,
                 "tune.strategy=random", "tune.max_trials=2"]) == 0
    with (tmp_path / "s" / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"] and all(float(r["value"]) == 1.0 for r in rows)
