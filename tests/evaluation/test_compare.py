"""evaluate --compare: two runs on the same test split side by side; different splits are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taxotrain.cli import main
from taxotrain.evaluation.compare import Setting, parse_setting
from taxotrain.run import RunError
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
    assert float(rows["class top1"]["hsoftmax"]) == pytest.approx(m["ranks"]["class"]["top1"], abs=1e-3)
    diff = f"hsoftmax - {trained_run.name}"
    for key, a, b in (("class top1", base["ranks"]["class"]["top1"], m["ranks"]["class"]["top1"]),
                      ("mistake_severity", base["hierarchy"]["mistake_severity"], m["hierarchy"]["mistake_severity"])):
        row = rows[key]
        assert float(row[diff]) == pytest.approx(b - a, abs=1e-6)
        assert float(row[f"{diff} low"]) <= float(row[diff]) <= float(row[f"{diff} high"])
    assert rows["hierarchical_f1"][diff] == ""  # no interval for a metric the resampling does not cover
    f1 = rows["class macro_f1"]  # macro-F1 is resampled too: its interval holds the metrics.json difference
    assert float(f1[diff]) == pytest.approx(m["ranks"]["class"]["macro_f1"] - base["ranks"]["class"]["macro_f1"],
                                            abs=1e-6)
    assert float(f1[f"{diff} low"]) <= float(f1[f"{diff} high"])
    assert set(m["hierarchy"]) >= {"chain_accuracy", "partial_chain_accuracy", "mistake_severity",
                                   "hierarchical_precision", "hierarchical_recall", "hierarchical_f1"}
    assert (out / "compare.png").stat().st_size > 5000
    assert (other / "rollup.json").is_file()

    # seeds: a setting given as NAME=RUN,RUN is the mean of its runs; the same run twice changes nothing
    twice = tmp_path / "twice"
    assert main(["evaluate", "--compare", f"flat={trained_run},{trained_run}", str(other), "--out", str(twice)]) == 0
    with (twice / "compare.csv").open() as fh:
        rows2 = {r["metric"]: r for r in csv.DictReader(fh)}
    for key in ("class top1", "mistake_severity"):
        assert float(rows2[key]["flat"]) == pytest.approx(float(rows[key][trained_run.name]))
        for suffix in ("", " low", " high"):
            assert rows2[key][f"hsoftmax - flat{suffix}"] == rows[key][f"{diff}{suffix}"]
    both = tmp_path / "both"
    assert main(["evaluate", "--compare", str(trained_run), f"{trained_run},{other}", "--out", str(both)]) == 0
    with (both / "compare.csv").open() as fh:
        rows3 = {r["metric"]: r for r in csv.DictReader(fh)}
    pooled = next(c for c in rows3["class top1"] if c.endswith("(2 runs)"))
    pooled_mean = (m["ranks"]["class"]["top1"] + base["ranks"]["class"]["top1"]) / 2
    assert float(rows3["class top1"][pooled]) == pytest.approx(pooled_mean, abs=1e-6)
    assert float(rows3["class top1"][f"{pooled} [hsoftmax]"]) == pytest.approx(m["ranks"]["class"]["top1"], abs=1e-6)

    # image runs evaluated with retrieval: their retrieval precision@1 is compared with an interval too
    same = tmp_path / "same"
    assert main(["evaluate", "--compare", f"a={other}", f"b={other}", "--out", str(same)]) == 0
    with (same / "compare.csv").open() as fh:
        rows4 = {r["metric"]: r for r in csv.DictReader(fh)}
    assert float(rows4["class precision_at_1"]["a"]) == pytest.approx(m["retrieval"]["class"]["precision_at_1"])
    assert [float(rows4["class precision_at_1"][f"b - a{s}"]) for s in ("", " low", " high")] == [0, 0, 0]
    assert rows4["class map_at_r"]["b - a"] == ""  # shown, without an interval


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
    # --unpaired compares different splits, but only of runs with the same ranks
    assert main(["evaluate", "--compare", str(trained_run), str(run), "--unpaired", "--out", str(tmp_path / "c")]) == 2
    assert "different ranks" in capsys.readouterr().err


def test_unpaired_compare_of_two_splits_of_one_dataset(trained_run: Path, plankton_manifest: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "reseeded.h5"  # the same records split with another seed: other test records
    assert main(["prepare", "--manifest", str(plankton_manifest), "--ranks", "group,subgroup,class", "--seed", "7",
                 "--out", str(store), "--workers", "1", "--no-leak-check"]) == 0
    run = tmp_path / "reseeded"
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", *FAST]) == 0
    assert main(["evaluate", str(run), "--no-retrieval"]) == 0  # the views trained_run is scored with
    out = tmp_path / "u"
    assert main(["evaluate", "--compare", f"base={trained_run}", f"other={run}", "--unpaired", "--out",
                 str(out)]) == 0
    with (out / "compare.csv").open() as fh:
        row = {r["metric"]: r for r in csv.DictReader(fh)}["class top1"]
    assert float(row["other - base low"]) <= float(row["other - base"]) <= float(row["other - base high"])
    assert float(row["other - base"]) == pytest.approx(float(row["other"]) - float(row["base"]), abs=1e-6)


def test_settings_parse_names_and_seed_groups(tmp_path: Path) -> None:
    assert parse_setting("runs/flat") == Setting("flat", [Path("runs/flat")])
    assert parse_setting("runs/flat-s0,runs/flat-s1") == Setting("flat (2 runs)", [Path("runs/flat-s0"),
                                                                                  Path("runs/flat-s1")])
    assert parse_setting("hier=a,b,c").name == "hier" and len(parse_setting("hier=a,b,c").runs) == 3
    odd = tmp_path / "x=1,2"
    odd.mkdir()
    assert parse_setting(str(odd)).runs == [odd]  # an existing folder is one run, whatever its name holds
    with pytest.raises(RunError, match="NAME=RUN,RUN"):
        parse_setting("hier=")


def test_compare_refuses_runs_scored_with_different_views(trained_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copies = {}
    for tta in ("flip", "none"):  # the same run scored twice, each copy with its own test-time views
        copies[tta] = tmp_path / tta
        shutil.copytree(trained_run, copies[tta], ignore=shutil.ignore_patterns("mlruns", "tensorboard", "*.png"))
        assert main(["evaluate", str(copies[tta]), "--tta", tta, "--no-baseline"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(copies["flip"]), str(copies["none"]), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "different test-time views" in err and "--tta flip (retrieval: flip)" in err and "--tta none" in err
    assert not (tmp_path / "c").exists()  # refused before anything was written
