"""The leak check on real plankton images: the perceptual hash finds a resized and re-encoded copy (and not a
different image of the same class), prepare lists the copies that straddle splits, and --dedupe keeps one of each."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxotrain.cli import main
from taxotrain.data.duplicates import NEAR_DISTANCE, FirstOfEach, duplicate_pairs, fingerprint
from taxotrain.data.store import Store
from tests.conftest import SUBSET_CLASSES, need_plankton


def _print(path: Path) -> tuple[tuple[int, ...], str]:
    with Image.open(path) as img:
        img = img.convert("RGB")
        return fingerprint(img, np.asarray(img))


def _resized_reencoded(src: Path, dst: Path) -> None:
    with Image.open(src) as img:
        big = img.convert("RGB").resize((int(img.width * 1.6), int(img.height * 1.6)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=70)
    dst.write_bytes(buf.getvalue())


def test_the_hash_finds_a_resized_reencoded_copy_and_not_a_sibling(tmp_path: Path) -> None:
    images = sorted((need_plankton() / "images" / SUBSET_CLASSES[2]).glob("*.jpg"))[:30]
    _resized_reencoded(images[0], tmp_path / "copy.jpg")
    shutil.copy(images[0], tmp_path / "same.jpg")
    prints = [_print(p) for p in [*images, tmp_path / "copy.jpg", tmp_path / "same.jpg"]]
    hashes, digests = np.array([p[0] for p in prints], dtype=np.uint64), [p[1] for p in prints]
    pairs = {(p.a, p.b): p for p in duplicate_pairs(hashes, digests)}
    n = len(images)
    assert pairs[(0, n + 1)].exact and pairs[(0, n + 1)].distance == 0  # the same file under another name
    assert not pairs[(0, n)].exact and pairs[(0, n)].distance <= NEAR_DISTANCE  # 1.6x larger, JPEG quality 70
    assert set(pairs) == {(0, n), (0, n + 1), (n, n + 1)}  # 30 photos of one species: none of them twins
    first = FirstOfEach()
    assert [first.seen(tuple(h), d) for h, d in zip(hashes, digests, strict=True)][-2:] == [
        (0, pairs[(0, n)].distance), (0, 0)]


def test_prepare_lists_copies_across_splits_and_dedupe_keeps_one(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "images"
    for cls in SUBSET_CLASSES[:3]:
        (root / cls).mkdir(parents=True)
        for img in sorted((need_plankton() / "images" / cls).glob("*.jpg"))[:20]:
            shutil.copy(img, root / cls / img.name)
    originals = sorted((root / SUBSET_CLASSES[0]).glob("*.jpg"))[:6]
    for i, img in enumerate(originals):  # 3 exact copies and 3 resized, re-encoded ones
        if i < 3:
            shutil.copy(img, img.with_name(f"dup_{img.name}"))
        else:
            _resized_reencoded(img, img.with_name(f"resized_{img.name}"))
    out = tmp_path / "s.h5"
    assert main(["prepare", str(root), "--ranks", "class", "--workers", "1", "--val", "0.3", "--test", "0.3",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    with (tmp_path / "s.leaks.csv").open(newline="") as fh:
        leaks = list(csv.DictReader(fh))
    store = Store(out)
    split_of = {store.paths[i]: name for name in ("train", "val", "test") for i in store.splits[name]}
    copies = {(f"{SUBSET_CLASSES[0]}/{img.name}", f"{SUBSET_CLASSES[0]}/{prefix}_{img.name}")
              for img, prefix in zip(originals, ["dup"] * 3 + ["resized"] * 3, strict=True)}
    straddling = {tuple(sorted(c)) for c in copies if split_of[c[0]] != split_of[c[1]]}
    assert straddling  # with 40% held out, some copies land on both sides
    assert {tuple(sorted((r["path_a"], r["path_b"]))) for r in leaks} == straddling
    assert all(r["split_a"] != r["split_b"] and (r["kind"] == "exact") == r["path_b"].split("/")[1].startswith(
        "dup_") | r["path_a"].split("/")[1].startswith("dup_") for r in leaks)
    assert f"near-duplicate pair(s) straddle splits, listed in {tmp_path / 's.leaks.csv'}" in said
    assert len(store.paths) == 66 and store.read_phashes().shape == (66, 4)

    assert main(["prepare", str(root), "--ranks", "class", "--workers", "1", "--val", "0.3", "--test", "0.3",
                 "--dedupe", "--out", str(tmp_path / "d.h5")]) == 0
    assert "leak check: 0 exact and 0 near-duplicate pair(s) straddle splits" in capsys.readouterr().out
    assert len(Store(tmp_path / "d.h5").paths) == 60
    with (tmp_path / "d.report.csv").open(newline="") as fh:
        reasons = [r for r in csv.reader(fh) if r and "--dedupe" in r[-1]]
    assert len(reasons) == 6 and all("kept that one" in r[-1] for r in reasons)
