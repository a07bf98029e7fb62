"""Store reader: errors for wrong files, per-worker memory map, multi-worker DataLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import pytest
import torch
from torch.utils.data import DataLoader

from taxotrain.config import AugmentConfig
from taxotrain.data.dataset import StoreDataset
from taxotrain.data.images import DecodeImage, build_transforms
from taxotrain.data.store import Store, StoreError


def test_not_a_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found.*taxotrain prepare"):
        Store(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_text("hello")
    with pytest.raises(StoreError, match="not a readable HDF5 file"):
        Store(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(StoreError, match="not a taxotrain store"):
        Store(tmp_path / "other.h5")


def test_pickle_drops_the_memory_map(plankton_store: Path) -> None:
    store = Store(plankton_store)
    first = bytes(store.read(0))
    clone = pickle.loads(pickle.dumps(store))
    assert clone._data is None and len(pickle.dumps(store)) < 200_000
    assert bytes(clone.read(0)) == first


def test_dataloader_with_two_workers_sees_every_record(plankton_store: Path) -> None:
    store = Store(plankton_store)
    mean, std = store.attrs["mean_gray"], store.attrs["std_gray"]
    ds = StoreDataset(store, store.splits["train"], DecodeImage(1), build_transforms(32, mean, std, True,
                                                                                      AugmentConfig()))
    seen, indices = [], []
    for batch in DataLoader(ds, batch_size=50, num_workers=2):
        assert batch["input"].shape[1:] == (1, 32, 32) and torch.isfinite(batch["input"]).all()
        seen.append(batch["target"])
        indices.append(batch["index"])
    labels = torch.cat(seen)
    assert torch.equal(torch.cat(indices), torch.from_numpy(store.splits["train"]))
    assert torch.equal(labels, torch.from_numpy(store.labels[store.splits["train"]]))


def test_fingerprint_changes_with_the_split_not_with_the_time(plankton_manifest: Path, tmp_path: Path) -> None:
    from taxotrain.data.prepare import prepare_images

    ranks = ["group", "subgroup", "class"]
    a = prepare_images(None, tmp_path / "a.h5", ranks, manifest=plankton_manifest, workers=1, seed=0).store
    b = prepare_images(None, tmp_path / "b.h5", ranks, manifest=plankton_manifest, workers=1, seed=0).store
    c = prepare_images(None, tmp_path / "c.h5", ranks, manifest=plankton_manifest, workers=1, seed=1).store
    fa, fb, fc = Store(a).fingerprint, Store(b).fingerprint, Store(c).fingerprint
    assert fa is not None and len(fa) == 64
    assert fa == fb  # same data and split: same fingerprint, whatever the creation time
    assert fa != fc  # another split seed: the test records differ
