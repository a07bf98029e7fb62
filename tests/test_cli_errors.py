"""Every user error reachable from the command line ends in one line that names the key, file or rank and the fix,
with exit status 2 and nothing written: a walk through the mistakes a new user makes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taxotrain.cli import main
from taxotrain.data.signals import ucr_folder


class Payload:
    """What an unsafe pickle holds: an object whose loading runs code."""


TINY = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=16", "data.num_workers=0",
        "logging.mlflow=false", "logging.tensorboard=false", "trainer.cpu_threads=1"]


@pytest.fixture(scope="module")
def world(synthetic_set: tuple[Path, Path], gunpoint_store: Path, signal_run: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small image store and run, a signal store and run, and files a user might point at by mistake."""
    root = tmp_path_factory.mktemp("errors")
    images, taxonomy = synthetic_set
    store = root / "s.h5"
    assert main(["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species",
                 "--out", str(store)]) == 0
    run = root / "run"
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", *TINY]) == 0
    (root / "junk.h5").write_text("not hdf5")
    (root / "bad.yaml").write_text("optim:\n  lr: [1\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, root / "plain.pt")
    torch.save({"model": Payload()}, root / "unsafe.pt")  # a pickle that needs code to load
    (root / "empty").mkdir()
    one = root / "one_class" / "only"
    one.mkdir(parents=True)
    for p in sorted((images / "squares_red_plain").glob("*.jpg"))[:8]:
        (one / p.name).write_bytes(p.read_bytes())
    contradict = root / "contradict.csv"
    contradict.write_text("family,genus,species\nF1,G1,S1\nF2,G1,S2\n")
    return {"root": root, "store": store, "run": run, "images": images, "taxonomy": taxonomy,
            "gunpoint": gunpoint_store, "signal_run": signal_run}


def _cases(w: dict[str, Path]) -> list[tuple[list[str], list[str]]]:
    """(argv, substrings the one-line error must hold): each names what is wrong and how to fix it."""
    r, store, run = w["root"], w["store"], w["run"]
    fit = ["fit", f"data.store={store}", f"run.dir={r / 'new'}", *TINY]
    return [
        (["fit", "optim.lrr=0.1"], ["optim.lrr", "did you mean 'optim.lr'"]),
        (["fit", "trainer.max_epochs=0"], ["trainer.max_epochs", "greater than or equal to 1"]),
        (["fit", "optim.name=adam"], ["optim.name", "adamw", "sgd"]),
        (["fit", "task=video"], ["'task'", "image", "signal"]),
        (["fit", "task=signal", "data.image_size=48"], ["data.image_size", "task: signal", "image tasks"]),
        (["fit", "data.signal_augment.jitter=0.1"], ["data.signal_augment.jitter", "task: image", "signal"]),
        (["fit", "--config", str(r / "missing.yaml")], ["missing.yaml", "init-config"]),
        (["fit", "--config", str(r / "bad.yaml")], ["bad.yaml", "not valid YAML", "line"]),
        (["fit", f"run.dir={r / 'x'}"], ["data.store is not set", "taxotrain prepare"]),
        (["fit", f"data.store={r / 'nope.h5'}", f"run.dir={r / 'x'}"], ["nope.h5", "not found", "taxotrain prepare"]),
        (["fit", f"data.store={r / 'junk.h5'}", f"run.dir={r / 'x'}"], ["junk.h5", "not a readable HDF5"]),
        ([*fit, "trainer.monitor=val/order/top1"], ["trainer.monitor", "val/species/top1"]),
        ([*fit, "mix.within=order"], ["mix.within", "'order'", "family, genus, species"]),
        ([*fit, "loss.rank_weights={order: 1}"], ["loss.rank_weights", "order", "family, genus, species"]),
        ([*fit, "data.hide_labels={order: 0.3}"], ["data.hide_labels", "order", "family, genus, species"]),
        ([*fit, "model.backbone=resnet1800"], ["resnet1800", "timm"]),
        ([*fit, "model.kwargs={no_such_arg: 1}"], ["model.kwargs", "no_such_arg"]),
        ([*fit, f"model.pretrained_path={r / 'none.pth'}"], ["model.pretrained_path", "none.pth", "not found"]),
        ([*fit, f"model.pretrained_path={r / 'unsafe.pt'}"], ["model.pretrained_path", "unsafe.pt", "state_dict"]),
        ([*fit, "progressive.stages=[{epochs: 40}]"], ["progressive.stages", "trainer.max_epochs"]),
        (["fit", f"data.store={w['gunpoint']}", f"run.dir={r / 'x'}", *TINY], ["signal store", "set task: signal"]),
        (["fit", f"data.store={store}", f"run.dir={run}", *TINY], [str(run), "--resume auto"]),
        (["fit", f"data.store={store}", f"run.dir={r / 'x'}", "--resume", str(r / "none.ckpt"), *TINY],
         ["none.ckpt", "no such checkpoint"]),
        (["fit", f"data.store={store}", f"run.dir={r / 'x'}", "--resume", str(r / "plain.pt"), *TINY],
         ["plain.pt", "not a taxotrain checkpoint"]),
        (["fit", f"data.store={store}", f"run.dir={run}", "--resume", "auto", *TINY, "data.image_size=40"],
         ["data.image_size", "40", "32", "new run.dir"]),
        (["evaluate", str(r / "empty")], ["no checkpoints/best.ckpt", "taxotrain fit"]),
        (["evaluate", str(r / "unsafe.pt")], ["unsafe.pt", "never loads"]),
        (["evaluate", str(w["signal_run"]), "--tta", "flip"], ["--tta flip", "image runs"]),
        (["evaluate", str(run), "--store", str(w["gunpoint"])], ["signal store", "--store"]),
        (["evaluate", "--compare", str(run)], ["--compare needs at least two"]),
        (["predict", str(run), str(r / "no_such_folder")], ["no_such_folder", "no such file or folder"]),
        (["predict", str(run), str(r / "empty")], ["no image files found", "empty"]),
        (["prepare", str(r / "nowhere"), "--out", str(r / "p.h5")], ["nowhere", "not a folder"]),
        (["prepare", str(w["images"]), "--ranks", "genus,genus", "--out", str(r / "p.h5")], ["--ranks", "distinct"]),
        (["prepare", str(w["images"]), "--ranks", "family,genus,species", "--out", str(r / "p.h5")],
         ["--taxonomy"]),
        (["prepare", str(w["images"]), "--taxonomy", str(r / "contradict.csv"), "--ranks", "family,genus,species",
          "--out", str(r / "p.h5")], ["contradict", "G1", "line"]),
        (["prepare", str(ucr_folder("GunPoint")), "--format", "hdf9", "--out", str(r / "p.h5")],
         ["hdf9", "capfinder_csv"]),
        (["prepare", str(r / "one_class"), "--out", str(r / "one.h5")], []),  # prepares (with a warning): see below
        (["tune", f"data.store={store}", f"run.dir={r / 't'}"], ["tune.space is empty"]),
        (["tune", f"data.store={store}", f"run.dir={r / 't'}", "tune.space={optim.lrr: {type: float, low: 0.1, "
          "high: 0.2}}"], ["tune.space.optim.lrr", "did you mean 'optim.lr'"]),
    ]


def test_every_user_error_is_one_line_with_the_fix(world: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    checked = 0
    for argv, needles in _cases(world):
        if not needles:  # not an error on its own
            assert main(argv) == 0, argv
            capsys.readouterr()
            continue
        code = main(argv)
        out = capsys.readouterr()
        err = out.err.strip()
        assert code == 2, f"{argv}: exit {code}, stderr {err!r}"
        assert err.count("\n") == 0 and err.startswith(f"taxotrain {argv[0]}: error: "), f"{argv}: {err!r}"
        missing = [n for n in needles if n not in err]
        assert not missing, f"{argv}: {missing} not in {err!r}"
        checked += 1
    assert checked >= 20
    assert not (world["root"] / "x").exists() and not (world["root"] / "new").exists()  # nothing half-written


def test_a_store_with_one_class_is_refused_by_fit(world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    r = world["root"]
    assert main(["prepare", str(r / "one_class"), "--out", str(r / "one1.h5")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "fewer than 2 classes at rank(s) class (1)" in err  # prepare says so at once
    assert main(["fit", f"data.store={r / 'one1.h5'}", f"run.dir={r / 'one'}", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fewer than 2 classes" in err and "class (1)" in err
