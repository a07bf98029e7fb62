"""taxotrain embed: one row per file (an unreadable one included, with its error), unit-length embeddings that are
the run's, as .npz or .parquet; any image run (a classifier's pooled features too)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from taxotrain.cli import main
from taxotrain.run import load_run
from tests.conftest import need_plankton


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real images in a folder tree and a broken one."""
    root = need_plankton() / "images"
    folder = tmp_path_factory.mktemp("embed") / "images"
    (folder / "deep").mkdir(parents=True)
    picks = sorted((root / "amphipods").glob("*.jpg"))[:2] + sorted((root / "protist_noctiluca").glob("*.jpg"))[:1]
    for i, p in enumerate(picks):
        shutil.copy(p, (folder / "deep" if i else folder) / p.name)
    (folder / "broken.jpg").write_bytes(picks[0].read_bytes()[:100])
    return folder


def test_embed_writes_one_row_per_file_as_npz(embedding_run: Path, files: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.npz"
    assert main(["embed", str(embedding_run), str(files), "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as saved:
        paths, emb, errors = list(saved["path"]), saved["embedding"], list(saved["error"])
    assert sorted(paths) == sorted(str(p) for p in files.rglob("*.jpg")) and emb.shape == (4, 96)
    broken = paths.index(str(files / "broken.jpg"))
    assert errors[broken] and np.isnan(emb[broken]).all()
    good = [i for i in range(4) if i != broken]
    assert not any(errors[i] for i in good) and np.allclose(np.linalg.norm(emb[good], axis=1), 1, atol=1e-5)

    run = load_run(embedding_run)  # the same numbers as the run's own embedding of the file
    batch = next(run.task.prediction_batches([paths[good[0]]], 1, 0))
    with torch.no_grad():
        own = run.task.embed_step(run.task.inference_module(run.model), {"input": batch.input})
    assert np.allclose(emb[good[0]], own[0] / np.linalg.norm(own[0]), atol=1e-5)


def test_embed_parquet_and_a_classifier_run(trained_run: Path, files: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "e.parquet"
    assert main(["embed", str(trained_run), str(files), "--out", str(out)]) == 0
    table = pq.read_table(out).to_pydict()
    assert set(table) == {"path", "embedding", "error"} and len(table["path"]) == 4
    width = load_run(trained_run).model.num_features
    rows = [np.asarray(e, dtype=np.float64) for e, err in zip(table["embedding"], table["error"], strict=True)
            if not err]
    assert len(rows) == 3 and all(len(r) == width and abs(np.linalg.norm(r) - 1) < 1e-5 for r in rows)


def test_embed_refuses_what_it_cannot_write(embedding_run: Path, files: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["embed", str(embedding_run), str(files), "--out", str(tmp_path / "e.csv")]) == 2
    assert ".npz or .parquet" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert main(["embed", str(embedding_run), str(files), "--out", str(tmp_path / "e.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs pyarrow" in err and "e.npz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e.parquet").exists()
