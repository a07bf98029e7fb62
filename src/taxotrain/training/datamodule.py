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
from taxotrain.training.progressive import Stage, expand_stages, is_progressive, probe_batch_size, stage_at


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
    """Train/val/test loaders of an image store. The train loader follows the progressive stage of the current
    epoch (image size, batch size, RandAugment magnitude); val and test use the final stage's image size."""

    def __init__(self, cfg: Config, store: Store, stages: list[Stage] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.store = store
        self._init_stages(cfg, stages)
        self.channels = resolve_channels(cfg, store)
        self.mean, self.std = store.norm(self.channels)
        self.workers = resolve_workers(cfg.data.num_workers)

    def _init_stages(self, cfg: Config, stages: list[Stage] | None) -> None:
        """The per-stage loader state every data module shares."""
        self.stages = stages or expand_stages(cfg)
        self._train: tuple[int, DataLoader] | None = None  # (stage index, loader), reused within a stage
        self.batch_sizes: dict[int, int] = {}  # stage index -> resolved batch size

    @property
    def eval_size(self) -> int:
        """Image size for validation, testing and prediction: the last stage's."""
        return self.stages[-1].image_size

    def dataset(self, split: str, train: bool = False, stage: Stage | None = None) -> ImageStoreDataset:
        """The dataset of one split, with training (at ``stage``'s size and magnitude) or evaluation transforms."""
        d = self.cfg.data
        size = stage.image_size if stage is not None else self.eval_size
        augment = d.augment.model_copy(update={"magnitude": stage.magnitude}) if train and stage else d.augment
        tf = build_transforms(size, self.mean, self.std, train, augment if train else None, d.pad_fill)
        labels = hide_labels(self.store, d.hide_labels, self.cfg.run.seed) if split == "train" else None
        return ImageStoreDataset(self.store, self.store.splits[split], tf, self.channels, labels)

    def _loader(self, ds: ImageStoreDataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
                          num_workers=self.workers, persistent_workers=self.workers > 0,
                          pin_memory=torch.cuda.is_available(), prefetch_factor=4 if self.workers else None)

    def current_stage(self) -> Stage:
        """The stage of the trainer's current epoch (the first stage before training starts)."""
        trainer = getattr(self, "trainer", None)
        return stage_at(self.stages, trainer.current_epoch if trainer is not None else 0)

    def stage_batch_size(self, stage: Stage) -> int:
        """The stage's batch size; ``auto`` is probed on the GPU once per stage and is ``data.batch_size`` on CPU."""
        if stage.index not in self.batch_sizes:
            size = stage.batch_size
            if size == "auto":
                size = self._probe(stage)
            self.batch_sizes[stage.index] = int(size)
        return self.batch_sizes[stage.index]

    def _probe(self, stage: Stage) -> int:
        module = self.trainer.lightning_module if getattr(self, "trainer", None) is not None else None
        device = module.device if module is not None else torch.device("cpu")
        if module is None or device.type != "cuda":
            print(f"stage {stage.index + 1}: batch_size auto needs a GPU to probe; using data.batch_size="
                  f"{self.cfg.data.batch_size}", flush=True)
            return self.cfg.data.batch_size
        buffers = {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}

        def try_batch(n: int) -> None:
            x = torch.randn(n, self.channels, stage.image_size, stage.image_size, device=device)
            y = torch.zeros(n, len(self.store.ranks), dtype=torch.long, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_bf16_supported()):
                loss = module.loss(module.model(x), y)["loss"]
            loss.backward()
            module.model.zero_grad(set_to_none=True)

        try:
            found = probe_batch_size(try_batch, self.cfg.data.batch_size, cap=len(self.store.splits["train"]) // 2)
        finally:
            module.load_state_dict(buffers, strict=False)  # the probe's forward passes must not move BN statistics
        found = max(8, int(found * 0.9) // 8 * 8)  # leave headroom for fragmentation and the optimizer step
        print(f"stage {stage.index + 1}: batch_size auto -> {found} at {stage.image_size}px", flush=True)
        return found

    def train_dataloader(self) -> DataLoader:
        stage = self.current_stage()
        if self._train is not None and self._train[0] == stage.index:
            return self._train[1]  # same stage: keep the loader (and its persistent workers)
        ds = self.dataset("train", train=True, stage=stage)
        batch = self.stage_batch_size(stage)
        drop_last = len(ds) > batch  # a last batch of 1 breaks batch norm
        loader = self._loader(ds, batch, EpochShuffleSampler(len(ds), self.cfg.run.seed), drop_last)
        self._train = (stage.index, loader)
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.cfg.data.batch_size * 2, None, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.cfg.data.batch_size * 2, None, False)


class SignalDataModule(ImageDataModule):
    """Train/val/test loaders of a signal store (``task: signal``): standardisation, online augmentation.

    ``data.num_workers: auto`` means 0 here: the series sit in a memory map and the transforms are cheap, so worker
    processes cost more than they save.
    """

    def __init__(self, cfg: Config, store: Store, stages: list[Stage] | None = None) -> None:
        L.LightningDataModule.__init__(self)
        if store.kind != "signal":
            raise ConfigError(f"task: signal but {store.path} is an {store.kind} store; set task: {store.kind} or "
                              "prepare a signal source")
        if is_progressive(cfg):
            raise ConfigError("progressive: stages grow image sizes and apply to task: image only; remove the "
                              "progressive section from this signal config")
        self._init_stages(cfg, stages)
        self.cfg = cfg
        self.store = store
        self.channels = int(store.shape[1])
        self.length = int(store.shape[2])
        self.mean, self.std = signal_norm(store.attrs)
        self.workers = 0 if cfg.data.num_workers == "auto" else int(cfg.data.num_workers)

    def dataset(self, split: str, train: bool = False,  # type: ignore[override]
                stage: Stage | None = None) -> SignalStoreDataset:
        """The dataset of one split, with training or evaluation transforms."""
        d = self.cfg.data
        tf = build_signal_transforms(self.mean, self.std, train, d.signal_augment if train else None)
        labels = hide_labels(self.store, d.hide_labels, self.cfg.run.seed) if split == "train" else None
        return SignalStoreDataset(self.store, self.store.splits[split], tf, labels)


def create_datamodule(cfg: Config, store: Store, stages: list[Stage] | None = None) -> ImageDataModule:
    """The data module of ``cfg.task``; a store of the other kind is a one-line error."""
    if cfg.task == "signal":
        return SignalDataModule(cfg, store, stages)
    if store.kind != "image":
        raise ConfigError(f"{store.path} is a {store.kind} store; set task: {store.kind} (e.g. taxotrain init-config "
                          f"--task {store.kind})")
    return ImageDataModule(cfg, store, stages)
