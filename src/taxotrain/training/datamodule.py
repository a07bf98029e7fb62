"""The LightningDataModule over a store: transforms per split, seeded shuffling, worker settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from taxotrain.config import Config, ConfigError
from taxotrain.data.images import ImageStoreDataset, build_transforms
from taxotrain.data.signal_data import SignalStoreDataset, build_signal_transforms, signal_norm
from taxotrain.data.store import Store
from taxotrain.taxonomy import NULL


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch, fixed by ``(seed, epoch)``: a resumed run sees the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


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


def resolve_workers(num_workers: int | str) -> int:
    """``auto`` = one worker per CPU core, at most 8."""
    return min(8, os.cpu_count() or 1) if num_workers == "auto" else int(num_workers)


def resolve_channels(cfg: Config, store: Store) -> int:
    """Input channels: 1 for an all-greyscale store when ``data.channels`` is auto."""
    if cfg.data.channels == "auto":
        return 1 if store.grayscale else 3
    return int(cfg.data.channels)


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders of an image store."""

    def __init__(self, cfg: Config, store: Store) -> None:
        super().__init__()
        self.cfg = cfg
        self.store = store
        self.channels = resolve_channels(cfg, store)
        self.mean, self.std = store.norm(self.channels)
        self.workers = resolve_workers(cfg.data.num_workers)

    def dataset(self, split: str, train: bool = False) -> ImageStoreDataset:
        """The dataset of one split, with training or evaluation transforms."""
        d = self.cfg.data
        tf = build_transforms(d.image_size, self.mean, self.std, train, d.augment if train else None, d.pad_fill)
        labels = hide_labels(self.store, d.hide_labels, self.cfg.run.seed) if split == "train" else None
        return ImageStoreDataset(self.store, self.store.splits[split], tf, self.channels, labels)

    def _loader(self, ds: ImageStoreDataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
                          num_workers=self.workers, persistent_workers=self.workers > 0,
                          pin_memory=torch.cuda.is_available(), prefetch_factor=4 if self.workers else None)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train", train=True)
        drop_last = len(ds) > self.cfg.data.batch_size  # a last batch of 1 breaks batch norm
        return self._loader(ds, self.cfg.data.batch_size, EpochShuffleSampler(len(ds), self.cfg.run.seed), drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.cfg.data.batch_size * 2, None, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.cfg.data.batch_size * 2, None, False)


class SignalDataModule(ImageDataModule):
    """Train/val/test loaders of a signal store (``task: signal``): standardisation, online augmentation.

    ``data.num_workers: auto`` means 0 here: the series sit in a memory map and the transforms are cheap, so worker
    processes cost more than they save.
    """

    def __init__(self, cfg: Config, store: Store) -> None:
        L.LightningDataModule.__init__(self)
        if store.kind != "signal":
            raise ConfigError(f"task: signal but {store.path} is an {store.kind} store; set task: {store.kind} or "
                              "prepare a signal source")
        self.cfg = cfg
        self.store = store
        self.channels = int(store.shape[1])
        self.length = int(store.shape[2])
        self.mean, self.std = signal_norm(store.attrs)
        self.workers = 0 if cfg.data.num_workers == "auto" else int(cfg.data.num_workers)

    def dataset(self, split: str, train: bool = False) -> SignalStoreDataset:  # type: ignore[override]
        """The dataset of one split, with training or evaluation transforms."""
        d = self.cfg.data
        tf = build_signal_transforms(self.mean, self.std, train, d.signal_augment if train else None)
        labels = hide_labels(self.store, d.hide_labels, self.cfg.run.seed) if split == "train" else None
        return SignalStoreDataset(self.store, self.store.splits[split], tf, labels)


def create_datamodule(cfg: Config, store: Store) -> ImageDataModule:
    """The data module of ``cfg.task``; a store of the other kind is a one-line error."""
    if cfg.task == "signal":
        return SignalDataModule(cfg, store)
    if store.kind != "image":
        raise ConfigError(f"{store.path} is a {store.kind} store; set task: {store.kind} (e.g. taxotrain init-config "
                          f"--task {store.kind})")
    return ImageDataModule(cfg, store)
