"""The LightningDataModule over a store: the task's datasets per split, seeded shuffling, worker settings.

The train loader follows the progressive stage of the current epoch (image size, batch size, augmentation
magnitude); val and test use the final stage's settings. What a sample is comes from the task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from taxotrain.data.dataset import hide_labels
from taxotrain.data.store import Store
from taxotrain.stages import Stage, expand_stages, stage_at
from taxotrain.tasks import Task
from taxotrain.training.interrupt import ResumableLoader, ResumePoint, ignore_sigint_in_worker
from taxotrain.training.progressive import probe_batch_size


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch, fixed by ``(seed, epoch)``: a resumed run sees the same order.

    Under DDP every process draws the same permutation and keeps every ``world``-th record from its ``rank`` on
    (the order padded by repeating its start, so that every process trains the same number of batches and none
    waits for the others at the end of an epoch). The sampler shards itself, rather than Lightning's wrapper,
    so that a mid-epoch resume skips the right records in every process.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world = rank, world
        self.skip = 0  # records of this process's shard a mid-epoch checkpoint had trained on

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def order(self, g: torch.Generator) -> torch.Tensor:
        """The epoch's order of every record, before sharding."""
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        order = self.order(torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        if self.world > 1:
            pad = len(self) * self.world - len(order)
            order = torch.cat([order, order[:pad]])[self.rank :: self.world]
        return iter(order[self.skip :].tolist())

    def __len__(self) -> int:
        return -(-self.n // self.world)


class EpochWeightedSampler(EpochShuffleSampler):
    """``n`` draws with replacement, each record with probability proportional to its weight, fixed by
    ``(seed, epoch)``: class-balanced or square-root sampling (``data.sampler``); sharded as its parent."""

    def __init__(self, weights: torch.Tensor, seed: int, rank: int = 0, world: int = 1) -> None:
        super().__init__(len(weights), seed, rank, world)
        self.weights = weights.double()

    def order(self, g: torch.Generator) -> torch.Tensor:
        """The epoch's draws, before sharding."""
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)


class ShardSampler(Sampler[int]):
    """Every ``world``-th record from ``rank`` on, in order and unpadded: each val/test record is scored once over
    all processes (the metrics are summed across processes before they are computed)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def sampling_weights(labels: np.ndarray, power: float) -> torch.Tensor:
    """Per record ``1 / count(its class) ** power`` (``labels``: one rank's class per record, -1 unknown; the
    unknown records are one group): each class is then drawn in proportion to ``count ** (1 - power)``."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.from_numpy(counts[inverse].astype(np.float64) ** -power)


def drops_last_batch(records: int, batch: int) -> bool:
    """Whether an epoch leaves out its last, smaller batch: only when it holds less than half a batch (or a single
    record), whose noisy batch-norm statistics cost more than its records bring. A larger last batch is trained."""
    rest = records % batch
    return records > batch and (rest == 1 or 0 < rest < batch / 2)


class TaskDataModule(L.LightningDataModule):
    """Train/val/test loaders of ``task`` over ``store``."""

    def __init__(self, task: Task, store: Store, stages: list[Stage] | None = None, closed_form: bool = False) -> None:
        super().__init__()
        self.task = task
        self.closed_form = closed_form  # the model is fitted on the whole train split at once: no batches to drop
        self.cfg = task.config
        self.store = store
        self.stages = stages or expand_stages(self.cfg)
        self._train: tuple[int, DataLoader] | None = None  # (stage index, loader), reused within a stage
        self.batch_sizes: dict[int, int] = {}  # stage index -> resolved batch size
        self.workers = task.workers()
        self.resume_point = ResumePoint()

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints: the batches of the current epoch each process trained on (0 except after a Ctrl+C
        mid-epoch) and the records they add up to over every process."""
        batch = self._train[1].batch_size if self._train is not None else 0
        trained = self.resume_point.trained
        return {"batches_trained": trained, "records_trained": trained * int(batch or 0) * self.process()[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """A resumed run's first epoch skips the records the checkpoint had already trained on (checkpoints from
        before ``records_trained`` count batches of the stage's batch size, one process)."""
        records = state.get("records_trained")
        if records is None:
            batches = int(state.get("batches_trained", 0))
            records = batches * self.stage_batch_size(self.current_stage()) if batches else 0
        self.resume_point.skip_records = int(records)

    def dataset(self, split: str, train: bool = False, stage: Stage | None = None) -> Dataset:
        """The dataset of one split, with training (at ``stage``'s settings) or evaluation transforms."""
        labels = hide_labels(self.store, self.cfg.data.hide_labels, self.cfg.run.seed) if split == "train" else None
        return self.task.dataset(self.store, split, train=train, stage=stage, labels=labels)

    def _loader(self, ds: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> dict[str, Any]:
        return {"dataset": ds, "batch_size": batch_size, "sampler": sampler, "shuffle": False, "drop_last": drop_last,
                "num_workers": self.workers, "persistent_workers": self.workers > 0,
                "pin_memory": torch.cuda.is_available(), "prefetch_factor": 4 if self.workers else None,
                "worker_init_fn": ignore_sigint_in_worker if self.workers else None}

    def process(self) -> tuple[int, int]:
        """``(rank, world size)`` of this process: ``(0, 1)`` outside DDP."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

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
            batch = {k: v.to(device) for k, v in self.task.example_batch(n, stage).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_bf16_supported()):
                loss = self.task.validation_step(module.model, batch).loss
            loss.backward()
            module.model.zero_grad(set_to_none=True)

        try:
            found = probe_batch_size(try_batch, self.cfg.data.batch_size, cap=len(self.store.splits["train"]) // 2)
        finally:
            module.load_state_dict(buffers, strict=False)  # the probe's forward passes must not move BN statistics
        found = max(8, int(found * 0.9) // 8 * 8)  # leave headroom for fragmentation and the optimizer step
        if self.process()[1] > 1:  # every process must take the same number of steps: the smallest GPU decides
            import torch.distributed as dist

            size = torch.tensor(found, device=device)
            dist.all_reduce(size, op=dist.ReduceOp.MIN)
            found = int(size)
        print(f"stage {stage.index + 1}: batch_size auto -> {found} ({self.task.describe_input()})", flush=True)
        return found

    def train_dataloader(self) -> DataLoader:
        stage = self.current_stage()
        if self._train is not None and self._train[0] == stage.index:
            return self._train[1]  # same stage: keep the loader (and its persistent workers)
        ds = self.dataset("train", train=True, stage=stage)
        batch = self.stage_batch_size(stage)
        sampler = self._train_sampler(len(ds))
        per_process = len(sampler)
        drop_last = drops_last_batch(per_process, batch) and not self.closed_form
        if drop_last and self.process()[0] == 0:
            print(f"training leaves out the last {per_process % batch} of {per_process} records each epoch (a "
                  f"different {per_process % batch} each time, as the order is reshuffled): a batch that small "
                  f"disturbs batch norm. A data.batch_size that divides {per_process} trains on all of them",
                  flush=True)
        loader = ResumableLoader(**self._loader(ds, batch, sampler, drop_last), resume_point=self.resume_point)
        self._train = (stage.index, loader)
        return loader

    def _train_sampler(self, n: int) -> EpochShuffleSampler:
        """Every record once per epoch in a fresh order, or ``data.sampler``'s weighted draws at its rank."""
        cfg = self.cfg.data
        if cfg.sampler == "shuffle":
            return EpochShuffleSampler(n, self.cfg.run.seed, *self.process())
        rank = self.task.taxonomy.ranks.index(cfg.sampler_rank or self.task.taxonomy.finest)
        labels = hide_labels(self.store, cfg.hide_labels, self.cfg.run.seed)
        labels = (self.store.labels if labels is None else labels)[self.store.splits["train"], rank]
        return EpochWeightedSampler(sampling_weights(labels, 1.0 if cfg.sampler == "balanced" else 0.5),
                                    self.cfg.run.seed, *self.process())

    def _eval_loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        sampler = ShardSampler(len(ds), *self.process()) if self.process()[1] > 1 else None
        return DataLoader(**self._loader(ds, self.cfg.data.batch_size * 2, sampler, False))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
