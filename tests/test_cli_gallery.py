"""Few-shot enrolment through the real commands on real plankton: a run trained without two classes names them after
`gallery add` with a few images each (new ids after the trained classes, new groups too), says 'unknown' below a
rank's threshold and rolls up; one-line errors for a run without a gallery."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store
from tests.conftest import NEW_CLASSES, need_plankton

SHOTS = 10


def _images(cls: str, start: int, stop: int) -> list[Path]:
    return sorted((need_plankton() / "images" / cls).glob("*.jpg"))[start:stop]


def _predict(run: Path, files: list[Path], out: Path) -> list[dict[str, str]]:
    assert main(["predict", str(run), *map(str, files), "--gallery", "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_enrolled_classes_are_named_without_retraining(gallery_run: Path, without_new_store: Path,
                                                       tmp_path: Path) -> None:
    root = need_plankton()
    assert main(["gallery", "build", str(gallery_run)]) == 0
    meta = json.loads((gallery_run / "gallery" / "gallery.json").read_text())
    trained = Store(without_new_store).taxonomy
    assert meta["trained_classes"] == trained.num_classes and meta["records"]["train"] == len(
        Store(without_new_store).splits["train"]) and meta["chosen_on"] == "val"

    enrol = tmp_path / "enrol"  # a folder of class folders, the coarser ranks from the plankton taxonomy
    for cls in NEW_CLASSES:
        (enrol / cls).mkdir(parents=True)
        for p in _images(cls, 60, 60 + SHOTS):  # beyond the subset manifest's images
            shutil.copy(p, enrol / cls / p.name)
    assert main(["gallery", "add", str(gallery_run), str(enrol), "--taxonomy", str(root / "taxonomy.csv")]) == 0
    manifest = tmp_path / "more.csv"  # a manifest with rank columns adds to a taxon now known
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "class"])
        writer.writerows([[str(p), NEW_CLASSES[0]] for p in _images(NEW_CLASSES[0], 70, 72)])
    assert main(["gallery", "add", str(gallery_run), str(manifest)]) == 0

    meta = json.loads((gallery_run / "gallery" / "gallery.json").read_text())
    names = meta["tree"]["names"]
    ids = {cls: names[2].index(cls) for cls in NEW_CLASSES}
    assert sorted(ids.values()) == [trained.num_classes[2], trained.num_classes[2] + 1]  # after the trained ones
    assert names[0][trained.num_classes[0]:] == ["chaetognaths", "diatoms"]  # their groups are new too
    assert meta["records"]["added"] == 2 * SHOTS + 2 and [a["new_taxa"]["class"] for a in meta["added"]] == [
        NEW_CLASSES, []]
    with np.load(gallery_run / "gallery" / "gallery.npz", allow_pickle=False) as arrays:
        added = arrays["labels"][arrays["source"] == 1]
    assert (added[:, 1] == -1).all() and sorted(set(added[:, 2].tolist())) == sorted(ids.values())
    assert (added[added[:, 2] == ids[NEW_CLASSES[0]], 0] == trained.num_classes[0]).all()  # the manifest's imputed

    queries = {cls: _images(cls, 100, 125) for cls in NEW_CLASSES}
    rows = _predict(gallery_run, [p for files in queries.values() for p in files], tmp_path / "pred.csv")
    thresholds = meta["thresholds"]
    named = {cls: sum(r["class"] == cls for r in rows if f"/{cls}/" in r["path"]) for cls in NEW_CLASSES}
    assert sum(named.values()) > 0.5 * len(rows) and min(named.values()) > 0, named  # most of their images
    for r in rows:
        assert (r["class"] == "unknown") == (float(r["class_score"]) < thresholds["class"])
        if r["deepest_rank"]:
            assert r[r["deepest_rank"]] == r["deepest_label"] != "unknown"
            assert float(r["deepest_threshold"]) == pytest.approx(thresholds[r["deepest_rank"]], abs=1e-6)
        if r["deepest_rank"] == "class":  # both new classes hang straight under their group: no subgroup
            assert r["subgroup"] == "" and r["group"] in ("chaetognaths", "diatoms")
    assert {r["class_top1"] for r in rows} & set(NEW_CLASSES)

    meta["thresholds"]["class"] = 1.01  # nothing is that similar: every class is unknown, named at a coarser rank
    (gallery_run / "gallery" / "gallery.json").write_text(json.dumps(meta))
    rows = _predict(gallery_run, queries[NEW_CLASSES[1]][:5], tmp_path / "strict.csv")
    assert all(r["class"] == "unknown" and r["deepest_rank"] != "class" for r in rows)


def test_a_run_without_a_gallery_says_how_to_build_one(embedding_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    image = _images(NEW_CLASSES[0], 0, 1)[0]
    assert main(["predict", str(embedding_run), str(image), "--gallery", "--out", str(tmp_path / "p.csv")]) == 2
    assert main(["gallery", "add", str(embedding_run), str(image.parent)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("taxotrain gallery build" in e for e in errors)
    assert not (tmp_path / "p.csv").exists()
