"""The one Dataset over a store's records: whatever the kind, a sample is a dict of named tensors.

``{"input": tensor, "target": label index per rank (-1 = unknown), "index": record index}``. A new input (place, date)
is a new key, not a new tuple position. How a record's payload becomes the input tensor (decode an image, copy a
series) and how it is transformed are the task's choice, passed in as ``read`` and ``transform``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from taxotrain.config import ConfigError
from taxotrain.data.store import Store
from taxotrain.taxonomy import NULL


class StoreDataset(Dataset):
    """Records ``indices`` of ``store``; ``labels`` replaces the store's labels (e.g. with some hidden)."""

    def __init__(self, store: Store, indices: np.ndarray, read: Callable[[np.ndarray], torch.Tensor],
                 transform: Callable[[torch.Tensor], torch.Tensor], labels: np.ndarray | None = None) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.read = read  # payload (encoded bytes or an array) -> tensor; picklable for DataLoader workers
        self.transform = transform
        self.labels = store.labels if labels is None else labels  # [N_store, R]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = int(self.indices[i])
        return {"input": self.transform(self.read(self.store.read(idx))),
                "target": torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64)), "index": idx}


def no_transform(x: torch.Tensor) -> torch.Tensor:
    """The identity (picklable, for datasets whose ``read`` already prepares the input)."""
    return x


def stack_dataset(dataset: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """Every sample of ``dataset`` at once: inputs stacked ``[N, ...]`` and targets ``[N, ranks]`` (for models fitted
    in closed form on a whole split)."""
    from torch.utils.data import DataLoader

    inputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=0):
        inputs.append(batch["input"])
        targets.append(batch["target"])
    return torch.cat(inputs), torch.cat(targets).numpy()


def hide_labels(store: Store, fractions: dict[str, float] | None, seed: int) -> np.ndarray | None:
    """A copy of the store's labels with a seeded fraction of train records made unknown at a rank and every finer
    rank (partial identifications, e.g. records known only to genus). ``None`` when nothing is hidden."""
    if not fractions:
        return None
    unknown = set(fractions) - set(store.ranks)
    if unknown:
        raise ConfigError(f"bad value for 'data.hide_labels': rank(s) {', '.join(sorted(unknown))} not in the store; "
                          f"its ranks are {', '.join(store.ranks)}")
    labels = store.labels.copy()
    rng = np.random.default_rng(seed + 7919)
    train = store.splits["train"]
    for rank, fraction in fractions.items():
        if not 0 <= fraction <= 1:
            raise ConfigError(f"bad value for 'data.hide_labels.{rank}': {fraction}; give a fraction in [0, 1]")
        r = store.ranks.index(rank)
        known = train[labels[train, r] != NULL]
        chosen = rng.choice(known, size=int(round(fraction * len(known))), replace=False)
        labels[chosen, r:] = NULL
    return labels


def train_class_counts(store: Store, hidden: dict[str, float] | None, seed: int) -> list[np.ndarray]:
    """Train records per class at each rank, with ``data.hide_labels`` applied (records unknown at a rank are not
    counted there)."""
    labels = hide_labels(store, hidden, seed)
    train = (store.labels if labels is None else labels)[store.splits["train"]]
    return [np.bincount(train[train[:, r] >= 0, r], minlength=n).astype(np.int64)
            for r, n in enumerate(store.taxonomy.num_classes)]
