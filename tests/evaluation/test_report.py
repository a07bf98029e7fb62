"""evaluate on a trained run: metrics.json, per_class.csv, plots and report.html, and its errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from taxotrain.cli import main
from taxotrain.data.store import Store


def test_evaluate_writes_sane_report(trained_run: Path, plankton_store: Path) -> None:
    assert main(["evaluate", str(trained_run)]) == 0
    store = Store(plankton_store)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["split"] == "test" and metrics["evaluation"]["records"] == len(store.splits["test"])
    for rank in store.ranks:
        m = metrics["ranks"][rank]
        assert set(m) >= {"top1", "top5", "macro_f1", "balanced_accuracy"}
        assert all(0.0 <= m[k] <= 1.0 for k in ("top1", "top5", "macro_f1", "balanced_accuracy"))
        assert m["top5"] >= m["top1"]
    assert metrics["ranks"]["group"]["top5"] == 1.0  # 4 groups: the true group is always in the top 5
    r = store.ranks.index("subgroup")
    assert metrics["ranks"]["subgroup"]["n"] == int((store.labels[store.splits["test"], r] >= 0).sum())

    with (trained_run / "per_class.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(store.taxonomy.num_classes)
    for rank in store.ranks:
        assert sum(int(x["support"]) for x in rows if x["rank"] == rank) == metrics["ranks"][rank]["n"]

    html = (trained_run / "report.html").read_text()
    linked = re.findall(r'(?:src|href)="([^"]+)"', html)
    for rank in store.ranks:
        assert f"confusion_{rank}.png" in linked
    assert "curves_loss.png" in linked and "curves_accuracy.png" in linked
    for name in linked:
        assert (trained_run / name).is_file(), f"report links a missing file: {name}"
    with Image.open(trained_run / "confusion_class.png") as im:
        assert im.size[0] > 500


def test_evaluate_defaults_to_the_training_invariances(trained_run: Path) -> None:
    assert main(["evaluate", str(trained_run), "--split", "val"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["tta"] == "dihedral"  # trained with flips + rot90 and evaluated without --tta


def test_evaluate_with_tta_records_it(trained_run: Path) -> None:
    assert main(["evaluate", str(trained_run), "--tta", "flip", "--split", "val"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["tta"] == "flip" and metrics["evaluation"]["split"] == "val"
    assert "test-time augmentation: flip" in (trained_run / "report.html").read_text()


def test_evaluate_a_folder_without_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoints/best.ckpt" in err and err.count("\n") == 0


def test_checkpoint_from_elsewhere_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "not a taxotrain checkpoint" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"garbage")
    assert main(["predict", str(tmp_path / "run"), str(tmp_path)]) == 2
    assert "not a loadable checkpoint" in capsys.readouterr().err


def test_a_store_prepared_again_is_refused(synthetic_set: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    images, taxonomy = synthetic_set
    store, run = tmp_path / "s.h5", tmp_path / "run"
    prep = ["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species", "--out", str(store)]
    assert main([*prep, "--seed", "0"]) == 0
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", "model.backbone=test_resnet",
                 "data.image_size=32", "data.num_workers=0", "logging.mlflow=false", "logging.tensorboard=false"]) == 0
    before = store.read_bytes()
    capsys.readouterr()
    assert main([*prep, "--seed", "1"]) == 2  # prepare never replaces a store unless asked
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1 and store.read_bytes() == before
    assert main([*prep, "--seed", "1", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2  # other test records now: scoring them would mix in training records
    err = capsys.readouterr().err
    assert "not the store" in err and "--store" in err and err.count("\n") == 1
