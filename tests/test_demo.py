"""The demo runs prepare -> fit -> evaluate -> predict end to end and says where its report is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taxotrain.demo import MARKER, run_demo
from taxotrain.run import RunError


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    report = run_demo(out, epochs=2, per_species=10, signal_epochs=2)
    assert report == out / "run" / "report.html" and report.is_file()
    index = (out / "index.html").read_text()
    assert 'href="run/report.html"' in index and 'href="signal_run/report.html"' in index
    signal = json.loads((out / "signal_run" / "metrics.json").read_text())
    assert signal["evaluation"]["records"] == 242 and "minirocket" in signal["baseline"]  # OSULeaf's official test
    with (out / "signal_predictions.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 242
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert set(metrics["ranks"]) == {"family", "genus", "species"}
    with (out / "demo.report.csv").open() as fh:
        reasons = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert reasons["broken_truncated.jpg"] == "truncated image" and "notes.txt" in reasons
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and sum(bool(r["error"]) for r in rows) == 1
    run_demo(out, epochs=1, per_species=4, signal_epochs=0)  # a demo folder is rewritten on the next run
    assert (out / MARKER).is_file()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RunError, match="not a demo folder"):
        run_demo(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_signal_demo_trains_the_ucr_recipe() -> None:
    from taxotrain.config import load_config
    from taxotrain.demo import SIGNAL_OVERRIDES

    recipe = load_config(Path(__file__).resolve().parents[1] / "configs" / "ucr.yaml")
    demo = load_config(None, SIGNAL_OVERRIDES)
    assert (demo.model, demo.optim, demo.loss, demo.data.signal_augment) == (
        recipe.model, recipe.optim, recipe.loss, recipe.data.signal_augment)
    assert demo.data.batch_size == recipe.data.batch_size and demo.trainer.monitor == recipe.trainer.monitor
