"""evaluate --compare: two runs on the same test split side by side; different splits are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taxotrain.cli import main
from tests.conftest import FAST


def test_compare_flat_and_hierarchical(trained_run: Path, plankton_store: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "hsoftmax"
    assert main(["fit", f"data.store={plankton_store}", f"run.dir={other}", "trainer.max_epochs=1",
                 "model.head=hierarchical_softmax", *FAST]) == 0
    out = tmp_path / "cmp"
    assert main(["evaluate", "--compare", str(trained_run), str(other), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| chain_accuracy (higher is better) |" in printed and str(out / "compare.html") in printed
    assert f"hsoftmax - {trained_run.name} (95% CI)" in printed
    with (out / "compare.csv").open() as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    for key in ("class top1", "group top1", "mistake_severity", "hierarchical_f1", "group top1 from summed finest"):
        assert key in rows
    m = json.loads((other / "metrics.json").read_text())
    base = json.loads((trained_run / "metrics.json").read_text())
    assert float(rows["class top1"]["hsoftmax"]) == pytest.approx(m["class"]["top1"], abs=1e-3)
    diff = f"hsoftmax - {trained_run.name}"
    for key, a, b in (("class top1", base["class"]["top1"], m["class"]["top1"]),
                      ("mistake_severity", base["hierarchy"]["mistake_severity"], m["hierarchy"]["mistake_severity"])):
        row = rows[key]
        assert float(row[diff]) == pytest.approx(b - a, abs=1e-6)
        assert float(row[f"{diff} low"]) <= float(row[diff]) <= float(row[f"{diff} high"])
    assert rows["hierarchical_f1"][diff] == ""  # no interval for a metric the resampling does not cover
    assert set(m["hierarchy"]) >= {"chain_accuracy", "partial_chain_accuracy", "mistake_severity",
                                   "hierarchical_precision", "hierarchical_recall", "hierarchical_f1"}
    assert (out / "compare.png").stat().st_size > 5000
    assert (other / "rollup.json").is_file()


def test_compare_refuses_different_splits(trained_run: Path, tmp_path: Path, synthetic_set: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    images, taxonomy = synthetic_set
    store = tmp_path / "syn.h5"
    assert main(["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species",
                 "--out", str(store), "--workers", "1"]) == 0
    run = tmp_path / "syn"
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", *FAST]) == 0
    assert main(["evaluate", "--compare", str(trained_run), str(run), "--out", str(tmp_path / "c")]) == 2
    assert "different test splits" in capsys.readouterr().err
