"""Signal readers and prepare on real UCR data from the aeon wheel: official split, Capfinder CSVs with long fields
and bad rows, balancing, padding/truncation, NumPy pairs, one-line errors and the atomic store."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aeon.datasets import load_from_ts_file

import taxotrain.data.prepare_signals as prepare_signals_module
from taxotrain.cli import main
from taxotrain.config import PrepareConfig
from taxotrain.data.prepare_signals import prepare_signals
from taxotrain.data.signals import create_reader, fit_length, list_readers, preprocess, ucr_folder, znormalise
from taxotrain.data.store import Store


def _osuleaf() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_from_ts_file(str(ucr_folder("OSULeaf") / "OSULeaf_TRAIN.ts"))
    return X[:, 0, :], np.asarray(y).astype(str)


def _report(store: Path) -> list[dict[str, str]]:
    with store.with_name(store.stem + ".report.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_capfinder(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["read_id", "cap_class", "timeseries"])
        writer.writerows(rows)


def _joined(x: np.ndarray) -> str:
    return ",".join(f"{v:.6g}" for v in x)


def test_every_reader_is_registered() -> None:
    assert list_readers() == ["capfinder_csv", "numpy", "ucr_ts"]
    assert create_reader(ucr_folder("GunPoint")).name == "ucr_ts"


def test_ucr_folder_keeps_the_official_test_split(gunpoint_store: Path) -> None:
    store = Store(gunpoint_store)
    X_test, y_test = load_from_ts_file(str(ucr_folder("GunPoint") / "GunPoint_TEST.ts"))
    X_train, _ = load_from_ts_file(str(ucr_folder("GunPoint") / "GunPoint_TRAIN.ts"))
    assert store.kind == "signal" and store.ranks == ["class"] and store.attrs["znorm"]
    assert len(store.splits["test"]) == len(X_test)
    assert len(store.splits["train"]) + len(store.splits["val"]) == len(X_train) and len(store.splits["val"]) > 0
    first_test = store.splits["test"][0]
    np.testing.assert_allclose(store.data()[first_test, 0], znormalise(X_test[0]).ravel(), atol=1e-5)
    names = store.taxonomy.names[0]
    assert [names[i] for i in store.labels[store.splits["test"], 0]] == list(np.asarray(y_test).astype(str))


def test_znorm_of_multichannel_series_says_what_it_removes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # BasicMotions: 6 channels (accelerometer and gyroscope); the note names the count and how to undo it
    assert main(["prepare", str(ucr_folder("BasicMotions")), "--znorm", "--out", str(tmp_path / "z.h5")]) == 0
    out = capsys.readouterr().out
    assert "each of the 6 channels" in out and "prepare again without it" in out
    assert main(["prepare", str(ucr_folder("BasicMotions")), "--out", str(tmp_path / "raw.h5")]) == 0
    assert "--znorm" not in capsys.readouterr().out


def test_a_folder_with_an_equal_length_variant_reads_the_one_named_after_it(tmp_path: Path) -> None:
    # JapaneseVowels ships JapaneseVowels_TRAIN.ts (12 channels, 7-29 samples) beside JapaneseVowels_eq_TRAIN.ts
    out = tmp_path / "jv.h5"
    assert main(["prepare", str(ucr_folder("JapaneseVowels")), "--out", str(out)]) == 0
    store = Store(out)
    X_test, _ = load_from_ts_file(str(ucr_folder("JapaneseVowels") / "JapaneseVowels_TEST.ts"))
    assert store.payload.shape[1:] == (12, 29) and len(store.splits["test"]) == len(X_test) == 370
    lengths = set(store.payload.lengths.tolist())
    assert min(lengths) == 7 and max(lengths) == 29 and len(lengths) > 10  # variable lengths, not the _eq version


def test_capfinder_csv_with_long_fields_and_bad_rows(tmp_path: Path) -> None:
    X, y = _osuleaf()
    folder = tmp_path / "caps"
    folder.mkdir()
    long = np.tile(X[0], 40)  # 17,080 samples: the field is far beyond csv's 131,072-character default limit
    assert len(_joined(long)) > 131_072
    good = [(f"read{i}", y[i], _joined(X[i])) for i in range(1, 40)]
    _write_capfinder(folder / "part1.csv", [("long0", y[0], _joined(long)), *good[:20]])
    _write_capfinder(folder / "part2.csv", [*good[20:], ("bad_value", y[1], "0.1,0.2,abc,0.4"),
                                            ("empty", y[1], ""), ("no_class", "", "0.1,0.2"),
                                            ("alien", "99", _joined(X[2]))])
    out = tmp_path / "caps.h5"
    result = prepare_signals(folder, out, PrepareConfig(target_length=300), classes=sorted(set(y)))
    store = Store(out)
    assert result.kept == 40 and store.payload.shape == (40, 1, 300)
    i = store.paths.index("long0")
    np.testing.assert_allclose(store.data()[i, 0], X[0][:300], rtol=1e-5)  # truncation keeps the start
    reasons = {r["path"]: r["reason"] for r in _report(out)}
    assert reasons["part2.csv line 21"].startswith("non-numeric value 'abc' at position 3")
    assert reasons["part2.csv line 22"] == "empty series"
    assert reasons["part2.csv line 23"] == "empty cap_class"
    assert reasons["part2.csv line 24"].startswith("unknown class '99'")
    assert len(reasons) == 4


def test_several_thousand_rows_balanced_to_the_smallest_class(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_signals_module, "WRITE_BATCH", 500)  # several write batches
    X, y = _osuleaf()
    rng = np.random.default_rng(0)
    folder = tmp_path / "per_class"
    folder.mkdir()
    reps = 16  # 200 real series x 15 noisy copies + 18 long reads = 3,018 rows, as unbalanced as OSULeaf
    for cls in sorted(set(y)):
        members = np.flatnonzero(y == cls)
        rows = [(f"{cls}_{i}_{r}", cls, _joined(X[i] + rng.normal(0, 0.01, X.shape[1])))
                for i in members for r in range(reps - 1)]
        rows += [(f"{cls}_{i}_long", cls, _joined(np.tile(X[i], 40))) for i in members[:3]]  # 17,080-sample reads
        _write_capfinder(folder / f"class_{cls}.csv", rows)
    out = tmp_path / "balanced.h5"
    args = ["prepare", str(folder), "--examples-per-class", "null", "--target-length", str(X.shape[1]), "--seed", "3"]
    assert main([*args, "--out", str(out)]) == 0
    store = Store(out)
    smallest = min(Counter(y).values()) * (reps - 1) + 3
    counts = Counter(store.labels[:, 0].tolist())
    assert sorted(counts.values()) == [smallest] * len(set(y))
    assert store.attrs["examples_per_class"] == smallest
    assert store.payload.shape[2] == X.shape[1] and any(p.endswith("_long") for p in store.paths)
    again = tmp_path / "again.h5"
    assert main([*args, "--out", str(again)]) == 0
    assert Store(again).paths == store.paths  # seeded


def test_examples_per_class_number_touches_train_only(tmp_path: Path) -> None:
    out = tmp_path / "gp10.h5"
    prepare_signals(ucr_folder("GunPoint"), out, PrepareConfig(examples_per_class=10))
    store = Store(out)
    non_test = np.concatenate([store.splits["train"], store.splits["val"]])
    assert sorted(Counter(store.labels[non_test, 0].tolist()).values()) == [10, 10]
    assert len(store.splits["test"]) == 150


def test_padding_is_zeros_at_the_end_and_znorm_ignores_it() -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(fit_length(x, 6), [[1, 2, 3, 4, 0, 0]])
    np.testing.assert_array_equal(fit_length(x, 2), [[1, 2]])
    z = preprocess(x, 6, znorm=True)
    np.testing.assert_allclose(z[0, :4], znormalise(x)[0], atol=1e-6)
    assert z[0, 4:].tolist() == [0, 0] and abs(z[0, :4].mean()) < 1e-6
    np.testing.assert_allclose(preprocess(x, 3, znorm=True)[0], znormalise(x[:, :3])[0], atol=1e-6)


def test_numpy_pairs(tmp_path: Path) -> None:
    X, y = _osuleaf()
    X = X[:30].copy()
    X[5, 10] = np.nan
    np.savez(tmp_path / "set.npz", X=X, y=y[:30].astype(int))
    result = prepare_signals(tmp_path / "set.npz", tmp_path / "npz.h5", PrepareConfig(znorm=True))
    assert result.kept == 29 and _report(tmp_path / "npz.h5")[0]["path"] == "set.npz row 5"
    pair = tmp_path / "pair"
    pair.mkdir()
    np.save(pair / "X.npy", X[:, None, :])
    np.save(pair / "y.npy", y[:30])
    (tmp_path / "cfg.yaml").write_text("prepare:\n  target_length: 100\n  znorm: false\n")
    assert main(["prepare", str(pair), "--format", "numpy", "--config", str(tmp_path / "cfg.yaml"), "--znorm",
                 "--out", str(tmp_path / "pair.h5")]) == 0  # the flag wins over the config's prepare: section
    store = Store(tmp_path / "pair.h5")
    assert store.payload.shape == (29, 1, 100) and store.attrs["znorm"] and store.attrs["reader"] == "numpy"
    assert main(["prepare", str(pair), "--target-length", "500", "--out", str(tmp_path / "long.h5")]) == 0
    padded = Store(tmp_path / "long.h5").data()
    assert padded.shape == (29, 1, 500) and not padded[:, :, X.shape[1]:].any()


def test_bad_sources_are_one_line_errors_and_leave_no_store(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _write_capfinder(tmp_path / "bad.csv", [("a", "1", "x,y"), ("b", "1", "")])
    assert main(["prepare", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad.h5")]) == 2
    err = capsys.readouterr().err
    assert "no usable series" in err and err.count("\n") == 1
    assert not (tmp_path / "bad.h5").exists() and not list(tmp_path.glob(".bad.h5*"))
    (tmp_path / "other.csv").write_text("read_id,label,signal\nr1,1,0.1\n")
    assert main(["prepare", str(tmp_path / "other.csv"), "--out", str(tmp_path / "o.h5")]) == 2
    assert "no 'timeseries' column" in capsys.readouterr().err
    assert main(["prepare", str(ucr_folder("GunPoint")), "--examples-per-class", "lots", "--out",
                 str(tmp_path / "x.h5")]) == 2
    assert "examples_per_class" in capsys.readouterr().err


def test_capfinder_parsed_by_two_processes_is_the_store_one_process_writes(tmp_path: Path) -> None:
    X, y = _osuleaf()
    folder = tmp_path / "caps"
    folder.mkdir()
    _write_capfinder(folder / "a.csv", [(f"r{i}", y[i], _joined(X[i])) for i in range(60)]
                     + [("bad", y[0], "0.1,x"), ("nocls", "", "0.1,0.2")])
    stores = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.h5"
        prepare_signals(folder, out, PrepareConfig(target_length=200), workers=workers)
        stores[workers] = (Store(out), _report(out))
    (one, report_one), (two, report_two) = stores[1], stores[2]
    assert one.paths == two.paths and np.array_equal(one.data(), two.data()) and report_one == report_two
    assert one.fingerprint == two.fingerprint and len(report_one) == 2
