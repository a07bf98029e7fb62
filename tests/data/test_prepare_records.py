"""Place/date metadata through prepare: a manifest with good and bad values (stored with masks, bad ones reported,
no record lost), the real cetacean Darwin Core Archive as an occurrence store with its partial identifications, a
hand-made archive with packed images as an image store, and a manifest without files as occurrence records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store
from taxotrain.taxonomy import NULL
from tests.data.test_dwca import ARCHIVE, _files, _zip


def _report(store: Path) -> list[tuple[str, str]]:
    with store.with_name(store.stem + ".report.csv").open(newline="") as fh:
        return [(r["path"], r["reason"]) for r in csv.DictReader(fh)]


def test_manifest_metadata_is_stored_with_masks_and_bad_values_reported(plankton_manifest: Path,
                                                                         tmp_path: Path) -> None:
    with plankton_manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::9][:40]  # across the subset's classes
    values = [("12.5", "-150.25", "2021-05-03"), ("95", "10", "2021-13-40"), ("abc", "10", "2021-05"),
              ("", "", "2021"), ("-33.9", "151.2", "2019-12-31T23:30:00")]
    for i, row in enumerate(rows):
        row["decimalLatitude"], row["decimalLongitude"], row["eventDate"] = values[i % len(values)]
    manifest = tmp_path / "meta.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "m.h5"
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "group,subgroup,class", "--out", str(out),
                 "--workers", "1", "--val", "0.2", "--test", "0.2"]) == 0
    store = Store(out)
    assert len(rows) > 30 and len(store) == len(rows)  # no record lost for its metadata
    meta = store.metadata()
    assert list(json.loads(store.metadata_layout)["components"]) == ["place", "date", "year", "hour"]
    kind = {p: values[i % len(values)] for i, p in enumerate(r["filepath"] for r in rows)}
    for i, path in enumerate(store.paths):
        lat, _, when = kind[path]
        good_place = lat in ("12.5", "-33.9")
        assert meta["place_valid"][i] == good_place
        assert np.isnan(meta["lat"][i]) != good_place
        assert meta["date_valid"][i] == (when not in ("2021-13-40", "2021"))
        assert meta["hour_valid"][i] == ("T" in when)
    i = next(i for i, p in enumerate(store.paths) if kind[p][0] == "12.5")
    assert meta["lat"][i] == pytest.approx(12.5) and meta["lon"][i] == pytest.approx(-150.25)
    assert meta["day_of_year"][i] == 123
    report = _report(out)
    bad = [p for p in store.paths if kind[p][0] == "95"]
    reasons = [r for p, r in report if p == bad[0]]
    assert any("decimalLatitude 95 is outside -90..90" in r and "record is kept" in r for r in reasons)
    assert any("month 13 is outside 1..12" in r for r in reasons)
    assert any("abc" in r for _, r in report)
    assert len(report) == 24 and {p for p, _ in report} <= set(store.paths)


def test_real_cetacean_archive_is_an_occurrence_store_with_partial_identifications(tmp_path: Path) -> None:
    if not ARCHIVE.is_file():
        pytest.skip(f"the cetacean archive is not at {ARCHIVE} (the ../shared folder beside the repo)")
    out = tmp_path / "cet.h5"
    assert main(["prepare", "--dwca", str(ARCHIVE), "--ranks", "family,genus,scientificName", "--out",
                 str(out)]) == 0
    store = Store(out)
    assert store.kind == "occurrence" and len(store) == 2176
    names = store.taxonomy.names
    by_id = dict(zip(store.paths, store.labels.tolist(), strict=True))
    sample = [p for p, lab in by_id.items() if lab[2] == NULL and lab[1] != NULL]
    assert len(sample) == 83 + 3  # "Globicephala sp." and "Balaenoptera sp.": known to genus
    assert {names[1][by_id[p][1]] for p in sample} == {"Globicephala", "Balaenoptera"}
    family_only = [lab for lab in by_id.values() if lab[1] == NULL]
    assert len(family_only) == 82 and {names[0][lab[0]] for lab in family_only} == {"Delphinidae"}
    meta = store.metadata()
    assert int(meta["place_valid"].sum()) == 2065 and int(meta["date_valid"].sum()) == 2133
    report = _report(out)
    assert len(report) == 3 and "199.7" in dict(report)["urn:catalog:AADC:NSSD:NSSD-6144"]
    assert sum(len(v) for v in store.splits.values()) == 2176


def test_archive_with_packed_images_is_an_image_store(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "media.zip", _files())
    out = tmp_path / "img.h5"
    assert main(["prepare", "--dwca", str(archive), "--ranks", "family,genus,scientificName", "--out", str(out),
                 "--val", "0", "--test", "0", "--workers", "1"]) == 0
    store = Store(out)
    assert store.kind == "image" and store.paths == ["media/o1_a.png", "media/o1_b.png", "media/o2.png"]
    assert store.metadata()["place_valid"].tolist() == [True, True, True]
    assert store.labels[2, 2] == NULL  # Globicephala sp.
    assert not list(tmp_path.glob(".*unpacked*"))  # the images unpacked for the prepare are gone
    # and gone too when the prepare fails after unpacking them
    assert main(["prepare", "--dwca", str(archive), "--ranks", "family,genus,scientificName", "--out",
                 str(tmp_path / "bad.h5"), "--val", "0.7", "--test", "0.5"]) != 0
    assert not list(tmp_path.glob(".*unpacked*")) and not (tmp_path / "bad.h5").exists()


def test_manifest_without_files_is_occurrence_records(tmp_path: Path) -> None:
    manifest = tmp_path / "sightings.csv"
    rows = [("Delphinidae", "Tursiops", f"{-30 - i % 7}", f"{150 + i % 5}", f"2020-0{1 + i % 9}-1{i % 9}")
            for i in range(30)] + [("Delphinidae", "Globicephala", "-40", "140", "2021-02-02")] * 30
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["family", "genus", "decimalLatitude", "decimalLongitude", "eventDate"])
        writer.writerows(rows)
    out = tmp_path / "occ.h5"
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "family,genus", "--out", str(out)]) == 0
    store = Store(out)
    assert store.kind == "occurrence" and len(store) == 60 and bool(store.metadata()["date_valid"].all())


def test_occurrences_without_place_or_date_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "bare.csv"
    manifest.write_text("family,genus\nDelphinidae,Tursiops\nDelphinidae,Globicephala\n")
    assert main(["prepare", "--manifest", str(manifest), "--ranks", "family,genus", "--out",
                 str(tmp_path / "b.h5")]) != 0
    assert "no place or date columns" in capsys.readouterr().err and not (tmp_path / "b.h5").exists()
