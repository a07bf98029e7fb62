"""prepare's per-record state on disk: the ingested records (RecordTable) and what is kept of each verified image
(KeptImages) read back exactly, in pieces, and memory does not grow with the paths or the images."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from taxotrain.data import kept as kept_module
from taxotrain.data import records as records_module
from taxotrain.data.duplicates import WORDS
from taxotrain.data.kept import KeptImages
from taxotrain.data.records import Record, RecordTable
from taxotrain.data.verify import Verified

ROWS = [("/data", "a/1.png", ("x", "a"), None), ("/data", "b/ünïcode ✓.png", ("x", "b"), "site 1"),
        ("/other", "c/\udcff-raw-byte.png", (None, "c"), "site 2"), ("/data", "a/2.png", ("x", "a"), "site 1")]


def _table(rows: list[tuple] = ROWS) -> RecordTable:
    table = RecordTable()
    for row in rows:
        table.add(*row)
    return table


def test_records_read_back_as_added_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "READ_CHUNK", 3)  # iteration crosses piece boundaries
    rows = ROWS * 5
    table = _table(rows)
    want = [Record(*row) for row in rows]
    assert len(table) == len(rows) and bool(table) and not RecordTable()
    assert list(table) == want and [table[i] for i in range(len(rows))] == want and table[-1] == want[-1]
    assert list(table.paths()) == [r.path for r in want]
    assert list(table.relpaths([1, 2, 3, 7, 11, 12])) == [want[i].relpath for i in (1, 2, 3, 7, 11, 12)]
    view = table.path_view(np.array([0, 1, 5, 6, 7, 19]))
    assert len(view) == 6 and view[2] == want[5].relpath and view[1:5] == [want[i].relpath for i in (1, 5, 6, 7)]
    ids, names = table.name_ids()
    assert [names[i] for i in ids] == [r.names for r in want] and len(names) == 3
    gids, groups = table.group_ids()
    assert [groups[i] for i in gids] == [r.group for r in want] and len(groups) == 3
    table.add("/data", "late.png", ("x", "a"))  # adding after reading keeps both right
    assert table[len(rows)].relpath == "late.png" and table[3] == want[3]
    with pytest.raises(IndexError):
        table[len(table)]


def test_a_record_costs_a_few_bytes_whatever_its_path() -> None:
    n, path = 50_000, "some/long/folder/" + "x" * 100 + "/{}.png"
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = RecordTable()
    for i in range(n):
        table.add("/base", path.format(i), ("family", f"species {i % 7}"), f"group {i % 3}")
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert table[n - 1].relpath == path.format(n - 1)
    assert grown / n < 40  # the paths alone are 125 bytes each; they are on disk


def _verified(rng: np.random.Generator) -> Verified:
    gray = bool(rng.random() < 0.5)
    return Verified(True, nbytes=int(rng.integers(100, 9000)), height=int(rng.integers(5, 99)),
                    width=int(rng.integers(5, 99)), gray=gray, pixels=int(rng.integers(25, 9000)),
                    sums=rng.random(4) * 100, sq_sums=rng.random(4) * 50,
                    phash=tuple(int(v) for v in rng.integers(0, 2**63, WORDS, dtype=np.int64)),
                    digest=f"{int(rng.integers(0, 2**62)):020x}")


def test_kept_images_read_back_exactly_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept_module, "BUFFER_ROWS", 7)
    monkeypatch.setattr(kept_module, "READ_ROWS", 5)
    rng = np.random.default_rng(0)
    images = [_verified(rng) for _ in range(53)]
    kept = KeptImages()
    for i, v in enumerate(images):
        kept.add(2 * i, v, v.nbytes)
    assert len(kept) == 53 and list(kept.records) == [2 * i for i in range(53)]
    assert [kept.record_at(i) for i in (0, 6, 7, 48, 49, 52)] == [0, 12, 14, 96, 98, 104]  # on disk and buffered
    assert kept.total_bytes() == sum(v.nbytes for v in images)
    for name in ("nbytes", "height", "width", "gray", "pixels"):
        assert list(kept.column(name)) == [getattr(v, name) for v in images]
    assert kept.all_gray() == all(v.gray for v in images)
    assert kept.phashes().tolist() == [list(v.phash) for v in images]
    assert [d.decode() for d in kept.digests()] == [v.digest for v in images]
    rows = np.array([1, 4, 9, 10, 30, 52])
    for chosen in (None, rows):
        pick = list(range(53)) if chosen is None else list(chosen)
        sums = np.sum([images[i].sums for i in pick], 0)
        sq = np.sum([images[i].sq_sums for i in pick], 0)
        n = sum(images[i].pixels for i in pick)
        stats = kept.channel_stats(chosen)
        assert stats["mean_rgb"] == pytest.approx((sums / n)[:3].tolist())
        assert stats["std_gray"] == pytest.approx([float(np.sqrt(sq[3] / n - (sums[3] / n) ** 2))])
    kept.add(999, images[0], 1)  # adding after reading keeps both right
    assert kept.records[-1] == 999 and len(kept.column("height")) == 54


def test_kept_images_cost_memory_only_while_buffered() -> None:
    rng = np.random.default_rng(1)
    image = _verified(rng)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = KeptImages()
    for i in range(20_000):
        kept.add(i, image, 10)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(kept) == 20_000 and kept.records[-1] == 19_999
    assert grown < 2 * kept_module.BUFFER_ROWS * kept_module.ROW.itemsize  # the buffer, not 20,000 rows


def test_manifest_metadata_parsed_in_pieces_equals_parsed_whole(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taxotrain.data import ingest

    values = [("12.5", "-150.25", "2021-05-03"), ("95", "10", "2021-13-40"), ("abc", "10", "2021-05"),
              ("", "", "2021"), ("-33.9", "151.2", "2019-12-31T23:30:00")]
    lines = ["filepath,family,species,decimalLatitude,decimalLongitude,eventDate"]
    lines += [f"img/{i}.png,fam,sp {i % 3},{la},{lo},{d}" for i, (la, lo, d) in enumerate(values * 3)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    whole = ingest.from_manifest(manifest, ["family", "species"], None).metadata
    monkeypatch.setattr(ingest, "METADATA_CHUNK", 4)
    pieces = ingest.from_manifest(manifest, ["family", "species"], None).metadata
    assert len(pieces) == len(whole) == 15 and pieces.layout == whole.layout
    assert all(np.array_equal(pieces.arrays[k], whole.arrays[k], equal_nan=True) for k in whole.arrays)
    assert pieces.problems == whole.problems and len(whole.problems) >= 6  # bad latitude, month, text; 3 times
    assert [p.index for p in whole.problems if p.record == "img/6.png"] == [6, 6]


def test_the_worker_pool_verifies_in_order_and_reads_paths_only_a_little_ahead(tmp_path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from taxotrain.data import prepare_images
    from taxotrain.data.verify import verify_image

    monkeypatch.setattr(prepare_images, "VERIFY_CHUNK", 8)
    monkeypatch.setattr(prepare_images, "IN_FLIGHT", 2)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(300):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (8 + i % 5, 9, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "7.png").write_bytes(b"not an image")
    drawn = 0

    def source():
        nonlocal drawn
        for p in paths:
            drawn += 1
            yield p

    results = prepare_images._verified(source(), len(paths), workers=2)
    first = next(results)
    ahead = (prepare_images.IN_FLIGHT * 2 + 1) * prepare_images.VERIFY_CHUNK
    assert drawn <= ahead < len(paths)  # not every path at once, as Pool.imap would take them
    got = [first, *results]
    want = [verify_image(p) for p in paths]
    assert [(g.ok, g.height, g.digest) for g in got] == [(w.ok, w.height, w.digest) for w in want]
    assert not got[7].ok and drawn == len(paths)


def test_place_and_date_parsed_by_workers_equal_one_process(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taxotrain.data import ingest

    rng = np.random.default_rng(2)
    lines = ["filepath,family,species,decimalLatitude,decimalLongitude,eventDate"]
    for i in range(200):
        lat = "95" if i % 17 == 0 else f"{rng.uniform(-80, 80):.4f}"  # some values out of range: reported
        lon = f"{rng.uniform(-180, 180):.4f}"
        lines.append(f"img/{i}.png,fam {i % 5 % 2},sp {i % 5},{lat},{lon},2020-{1 + i % 12:02d}-03")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(ingest, "METADATA_CHUNK", 16)  # 13 chunks over 2 workers
    one = ingest.from_manifest(manifest, ["family", "species"], None, workers=1)
    two = ingest.from_manifest(manifest, ["family", "species"], None, workers=2)
    assert list(two.records) == list(one.records) and len(one.records) == 200
    assert all(np.array_equal(two.metadata.arrays[k], one.metadata.arrays[k], equal_nan=True)
               for k in one.metadata.arrays)
    assert two.metadata.problems == one.metadata.problems and len(one.metadata.problems) == 12
    assert [p.index for p in two.metadata.problems][:3] == [0, 17, 34]
