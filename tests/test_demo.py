"""The demo runs prepare -> fit -> evaluate -> predict end to end and says where its report is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taxotrain.demo import MARKER, _index, run_demo
from taxotrain.run import RunError


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    report = run_demo(out, epochs=2, per_species=10, signal_epochs=2)
    assert report == out / "run" / "report.html" and report.is_file()
    index = (out / "index.html").read_text()
    assert 'href="run/report.html"' in index and 'href="signal_run/report.html"' in index
    signal = json.loads((out / "signal_run" / "metrics.json").read_text())
    image = json.loads((out / "run" / "metrics.json").read_text())
    for m in (image, signal):  # the index shows each report's headline figures, not bare links
        assert all(f"<td>{r['top1']:.3f}</td>" in index for r in m["ranks"].values())
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


def test_index_shows_each_reports_headline_figures(tmp_path: Path) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    for run in (new, old):
        run.mkdir()
        (run / "report.html").write_text("<!doctype html>")
    (new / "metrics.json").write_text(json.dumps({
        "ranks": {"genus": {"top1": 0.8125, "top5": 1.0, "macro_f1": 0.75, "balanced_accuracy": 0.7, "n": 40},
                  "species": {"top1": 0.625, "top5": 0.9, "macro_f1": 0.5, "balanced_accuracy": 0.55, "n": 40}},
        "hierarchy": {"decoded_top1": {"genus": 0.8, "species": 0.6}, "chain_accuracy": 0.6,
                      "mistake_severity": 1.25},
        "evaluation": {"split": "test", "records": 40}}))
    # a metrics.json written before the "ranks" section existed, with a baseline
    (old / "metrics.json").write_text(json.dumps({
        "class": {"top1": 0.25, "top5": 0.5, "macro_f1": 0.2, "balanced_accuracy": 0.3, "n": 8},
        "baseline": {"minirocket": {"method": "MiniRocket", "top1": 0.875}}}))
    index = _index(tmp_path, {"new run": new / "report.html", "old run": old / "report.html",
                              "gone": tmp_path / "gone" / "report.html"}).read_text()
    assert 'href="new/report.html"' in index and 'href="old/report.html"' in index
    for top1 in ("0.812", "0.625", "0.800", "0.600", "0.250"):  # heads' and consistent path's top-1, new and old
        assert f"<td>{top1}</td>" in index, top1
    assert "chain accuracy 0.600" in index and "MiniRocket baseline top-1 0.875" in index
    assert "each rank's own head" in index and "consistent path" in index
    assert "no metrics.json" in index
