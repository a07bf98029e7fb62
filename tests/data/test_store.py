"""Store reader: errors for wrong files, per-worker memory map, multi-worker DataLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import pytest
import torch
from torch.utils.data import DataLoader

from taxotrain.config import AugmentConfig
from taxotrain.data.images import ImageStoreDataset, build_transforms
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
    first = bytes(store.record_bytes(0))
    clone = pickle.loads(pickle.dumps(store))
    assert clone._mmap is None and len(pickle.dumps(store)) < 200_000
    assert bytes(clone.record_bytes(0)) == first


def test_dataloader_with_two_workers_sees_every_record(plankton_store: Path) -> None:
    store = Store(plankton_store)
    mean, std = store.norm(1)
    ds = ImageStoreDataset(store, store.splits["train"], build_transforms(32, mean, std, True, AugmentConfig()), 1)
    seen = []
    for x, y in DataLoader(ds, batch_size=50, num_workers=2):
        assert x.shape[1:] == (1, 32, 32) and torch.isfinite(x).all()
        seen.append(y)
    labels = torch.cat(seen)
    assert len(labels) == len(store.splits["train"])
    assert torch.equal(labels, torch.from_numpy(store.labels[store.splits["train"]]))
