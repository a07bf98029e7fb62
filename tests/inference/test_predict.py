"""predict: CSV columns, recursive folders, paths as found, an error row for an unreadable file."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store
from tests.conftest import need_plankton


def test_predict_csv(trained_run: Path, plankton_store: Path, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    root = need_plankton() / "images"
    folder = tmp_path / "new"
    (folder / "deep" / "deeper").mkdir(parents=True)
    picks = sorted((root / "amphipods").glob("*.jpg"))[:3] + sorted((root / "diatom_chain_string").glob("*.jpg"))[:2]
    for i, p in enumerate(picks):
        shutil.copy(p, (folder / "deep" / "deeper" if i % 2 else folder) / p.name)
    (folder / "deep" / "broken.jpg").write_bytes(picks[0].read_bytes()[:200])
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    single = picks[-1]
    out = tmp_path / "pred.csv"
    assert main(["predict", str(trained_run), str(folder), str(single), "--out", str(out), "--topk", "5"]) == 0
    said = capsys.readouterr().out  # how fast, with how many loader workers
    assert re.search(r"predicted 6 record\(s\), 1 unreadable \(see the error column\) in [\d.]+ s \(\d+ records/s, "
                     r"0 worker\(s\)\)", said), said
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = reader.fieldnames
    tax = Store(plankton_store).taxonomy
    ranks = tax.ranks
    expected = ["path"] + [c for r in ranks for c in (r, f"{r}_score")]
    expected += ["deepest_rank", "deepest_label", "deepest_threshold"]
    expected += [c for i in range(1, 6) for c in (f"class_top{i}", f"class_top{i}_score")] + ["error"]
    assert columns == expected
    assert len(rows) == 7
    paths = [r["path"] for r in rows]
    assert str(folder / "deep" / "broken.jpg") in paths and str(single) in paths
    assert str(folder / "deep" / "deeper" / picks[1].name) in paths
    for r in rows:
        if r["path"].endswith("broken.jpg"):
            assert r["error"] and r["class"] == ""
            continue
        assert r["error"] == "" and r["class"] in tax.names[2]
        scores = [float(r[f"class_top{i}_score"]) for i in range(1, 6)]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        # the rank columns are one consistent path through the tree
        lineage = tax.lineage_names(2, tax.index(2, r["class"]))
        assert [r["group"], r["subgroup"] or None, r["class"]] == lineage
        if r["deepest_rank"]:
            assert r["deepest_label"] == r[r["deepest_rank"]]


def test_predict_missing_input_is_clear(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(trained_run), "no/such/folder"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_predict_keeps_every_good_row_beside_crafted_files(synthetic_run: Path, synthetic_set: tuple[Path, Path],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data.test_decode_paths import crafted_png, jpeg_claiming

    images, _ = synthetic_set
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = sorted((images / "squares_blue_plain").glob("*.jpg"))[:5]
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "bomb.png").write_bytes(crafted_png(100_000, 100_000))  # crashed libpng through torchvision
    (folder / "huge.jpg").write_bytes(jpeg_claiming(20_000, 20_000))  # 2.8 GB when decoded
    out = tmp_path / "pred.csv"
    assert main(["predict", str(synthetic_run), str(folder), "--out", str(out), "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "0.5 at every rank: the run was never evaluated" in printed  # and says which thresholds it used
    with out.open(newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    assert set(rows) == {p.name for p in good} | {"bomb.png", "huge.jpg"}
    assert "above the" in rows["bomb.png"]["error"] and "above the" in rows["huge.jpg"]["error"]
    assert all(rows[p.name]["species"] and not rows[p.name]["error"] for p in good)
    assert all(r["deepest_threshold"] in ("", "0.5") for r in rows.values())
