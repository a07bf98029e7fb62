"""The place/date metadata hooks every task has (docs/metadata.md): a run with ``model.metadata`` takes, beside its
image or series, each record's place/date as one row of raw values (``meta``, NaN where missing), and ``task:
prior`` takes the same rows as its ``input``.

The hooks add the rows to a dataset's samples (from the store) and to prediction batches (from manifest CSVs), mask
them during training on Linnaeus' schedule, hide components for evaluate's figures, wrap the backbone with the
metadata encoder and fusion the checkpoint's spec describes, and refuse a store or input without a component the
model takes. :class:`~taxotrain.tasks.base.Task` inherits them; a run without metadata passes through each
unchanged. Heavy libraries are imported inside the hooks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from taxotrain.config import MEAN, Config, ConfigError, with_model

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from taxotrain.data.specs import InputSpec
    from taxotrain.data.store import Store
    from taxotrain.tasks.base import InputBatch, Task

METADATA_KEY = "meta"  # the batch key of a record's place/date metadata beside its image or series


class MetadataHooks:
    """Place/date metadata as model input, for :class:`~taxotrain.tasks.base.Task` (see the module docstring)."""

    # the batch key that holds the place/date metadata rows of a run with metadata ("input" for a metadata-only task)
    metadata_key: ClassVar[str] = METADATA_KEY
    # whether the task's runs are place/date priors that `predict --prior` multiplies into other runs' probabilities
    is_prior: ClassVar[bool] = False
    config: Config
    spec: InputSpec
    name: ClassVar[str]
    progress: float = 0.0  # of the training, for the masking schedule (set_progress)
    step: int = 0

    @classmethod
    def metadata_spec_for(cls, config: Config, store: Store, components: Sequence[str] | None = None) -> str | None:
        """The metadata encoder's spec (JSON) of a new fit: ``components`` (default ``model.metadata``) at the
        ``model.metadata_*`` widths; ``None`` without metadata. A one-line error when the store lacks one of them."""
        from taxotrain.data.metadata_inputs import lacking

        asked = components
        components = list(config.model.metadata if components is None else components)
        if not components:
            if asked is None:
                _refuse_metadata_settings(config)
            return None
        if config.model.backbone in ("auto", MEAN):
            raise ConfigError(f"model.metadata with model.backbone: {config.model.backbone}: closed-form models "
                              "cannot take place/date metadata; name a network backbone or set model.metadata: []")
        missing, has = lacking(store, components)
        if missing:
            raise ConfigError(f"bad value for 'model.metadata': {', '.join(components)}; {store.path} has {has} (no "
                              f"{', '.join(missing)}): ask for what it has, or prepare it from data with those "
                              "columns (docs/data.md#place-and-date-metadata)")
        from taxotrain.models.metadata import MetadataEncoder

        m = config.model
        encoder = MetadataEncoder(components, dim=m.metadata_dim, hidden=m.metadata_hidden, depth=m.metadata_depth)
        return json.dumps(encoder.spec())

    @property
    def metadata_fields(self) -> list[tuple[str, tuple[str, ...]]]:
        """The metadata the model takes, in its order: (component, raw value names), e.g. ``[("place", ("lat",
        "lon")), ("date", ("day_of_year",))]``; empty for a run without metadata."""
        spec = getattr(self.spec, "metadata", None)
        return [(c["name"], tuple(c["inputs"])) for c in json.loads(spec)["components"]] if spec else []

    @property
    def metadata_components(self) -> tuple[str, ...]:
        """The metadata components the model takes (``()``: none)."""
        return tuple(name for name, _ in self.metadata_fields)

    def with_metadata(self, dataset: Dataset, store: Store) -> Dataset:
        """``dataset`` with each record's metadata row (``[F]`` floats, NaN = missing) under :attr:`metadata_key`,
        for a run with metadata; one line naming the components when ``store`` lacks one the model takes."""
        if not self.metadata_fields:
            return dataset
        from taxotrain.data.metadata_inputs import WithMetadata, store_matrix

        return WithMetadata(dataset, store_matrix(store, self.metadata_fields, f"the {self.name} model"),
                            self.metadata_key)

    def metadata_rows(self, arrays: dict[str, np.ndarray] | None, n: int) -> torch.Tensor:
        """The metadata rows ``[n, F]`` the model takes from value arrays and masks (``None``: all missing)."""
        import torch

        from taxotrain.data.metadata_inputs import complete_arrays, metadata_matrix

        return torch.from_numpy(metadata_matrix(complete_arrays(arrays, n), self.metadata_fields))

    def model_batch(self, batch: InputBatch) -> dict[str, torch.Tensor]:
        """The model's inputs for the readable records of a prediction batch: ``input``, plus their metadata rows
        (missing where the inputs carry none) for a run with metadata."""
        out = {"input": batch.input}
        if self.metadata_fields and self.metadata_key not in out and batch.input is not None:
            out[self.metadata_key] = self.metadata_rows(batch.metadata, len(batch.input))
        return out  # type: ignore[return-value]

    def _columns(self, components: Sequence[str]) -> list[int]:
        out, start = [], 0
        for name, inputs in self.metadata_fields:
            if name in components:
                out += range(start, start + len(inputs))
            start += len(inputs)
        return out

    def hide_metadata(self, batch: dict[str, torch.Tensor], components: Sequence[str]) -> dict[str, torch.Tensor]:
        """``batch`` with ``components`` of its metadata made missing (evaluate's figures with metadata masked)."""
        columns = self._columns(components)
        if not columns or self.metadata_key not in batch:
            return batch
        meta = batch[self.metadata_key].clone()
        meta[:, columns] = float("nan")
        return {**batch, self.metadata_key: meta}

    def set_progress(self, progress: float, step: int) -> None:
        """Where training is (``progress``: fraction of the training done, ``step``: optimizer steps so far): the
        metadata masking schedule follows it (the trainer calls this before each training batch)."""
        self.progress, self.step = progress, step

    def mask_training_metadata(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Linnaeus' masking schedule (``model.metadata_masking``, ``models/metadata_masking.py``) applied to a
        training batch: whole records' metadata and single components made missing, drawn from a generator seeded
        by ``run.seed`` and the step (the same masking when a run is repeated or resumed)."""
        import torch

        from taxotrain.models.metadata_masking import MetadataMasking

        if not self.metadata_fields or self.metadata_key not in batch:
            return batch
        cfg = self.config.model.metadata_masking
        masking = MetadataMasking(cfg.start, cfg.end, cfg.fraction, cfg.partial)
        meta = batch[self.metadata_key]
        spans, start = {}, 0
        for name, inputs in self.metadata_fields:
            spans[name] = (start, start + len(inputs))
            start += len(inputs)
        valid = {name: torch.isfinite(meta[:, a:b]).all(dim=1) for name, (a, b) in spans.items()}
        generator = torch.Generator().manual_seed(self.config.run.seed * 1_000_003 + self.step)
        kept = masking.apply(valid, self.progress, generator)
        meta = meta.clone()
        for name, (a, b) in spans.items():
            meta[:, a:b] = torch.where(kept[name][:, None], meta[:, a:b], torch.full_like(meta[:, a:b], float("nan")))
        return {**batch, self.metadata_key: meta}

    def check_exportable(self) -> None:
        """Refuse, in one line, a run that ``taxotrain export`` cannot write as a bundle."""
        from taxotrain.tasks.base import TaskError

        if self.metadata_fields:
            raise TaskError(f"export of a run that takes place/date metadata ({', '.join(self.metadata_components)}) "
                            "is not supported yet (a bundle feeds its model an image or a series alone); predict "
                            "with the run folder")

    def fuse_metadata(self, backbone: nn.Module) -> nn.Module:
        """For a run with metadata, ``backbone`` fused with the metadata encoder the spec saved
        (``model.metadata_fusion``); else ``backbone`` itself."""
        if not self.metadata_fields:
            return backbone
        from taxotrain.models.metadata import MetadataEncoder
        from taxotrain.models.metadata_fusion import FusedBackbone, MetadataVector

        encoder = MetadataEncoder.from_spec(json.loads(self.spec.metadata))  # type: ignore[attr-defined]
        return FusedBackbone(backbone, MetadataVector(encoder), self.config.model.metadata_fusion)

    def without_metadata(self) -> Task:
        """This task with no place/date metadata (the closed-form baselines of a run with metadata)."""
        if not self.metadata_fields:
            return self
        return type(self)(with_model(self.config, metadata=[]), self.taxonomy,  # type: ignore[call-arg,attr-defined]
                          replace(self.spec, metadata=None), self.class_counts)  # type: ignore[call-arg,attr-defined]


METADATA_SETTINGS = ("metadata_fusion", "metadata_dim", "metadata_hidden", "metadata_depth", "metadata_masking")


def _refuse_metadata_settings(config: Config) -> None:
    """A ``model.metadata_*`` setting without ``model.metadata`` does nothing: a one-line error, not a no-op."""
    from taxotrain.config import ModelConfig

    defaults = ModelConfig()
    for key in METADATA_SETTINGS:
        if getattr(config.model, key) != getattr(defaults, key):
            raise ConfigError(f"'model.{key}' does nothing without place/date metadata; set model.metadata (e.g. "
                              f"[place, date]) or remove it")
