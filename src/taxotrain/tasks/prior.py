"""``task: prior``: which taxa are found at a place and date, learnt from an occurrence store (no images).

Inputs: each record's place/date metadata (``model.metadata``, default every component of the store that has an
encoder: place, date, hour, elevation), as one row of raw values, NaN where missing; the Linnaeus masking schedule
hides whole records' metadata and single components during training, so the prior also answers for a record with
part of it (or none: then it gives the classes' frequencies). The model is the metadata encoder, a residual MLP
(``model.prior_blocks``, SINR's) and the per-rank heads; the objective is per-rank classification
(``tasks/classification.py``: decoding, consistency and roll-up as for images), or with ``loss.prior_background``
SINR's presence-only loss (``tasks/prior_objective.py``). ``evaluate`` adds the class-frequency baseline, and
``taxotrain predict IMAGE_RUN manifest.csv --prior PRIOR_RUN`` multiplies the prior into an image model's
probabilities (``inference/predict.py``). See docs/metadata.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxotrain.config import METADATA_COMPONENTS, Config, ConfigError, TaskRules
from taxotrain.data.specs import OCCURRENCE_KIND, OccurrenceSpec
from taxotrain.tasks.base import EMBEDDING_KEYS, InputBatch, Task, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from taxotrain.data.store import Store
    from taxotrain.stages import Stage
    from taxotrain.tasks.classification import RankClassification

NOT_FOR_PRIOR = "image and signal tasks; task: prior reads place/date metadata alone"
BACKBONE = "mlp"


@register_task("prior")
class PlaceDatePrior(Task):
    """Name the taxa likely at a place and date, from occurrence records (a prior for image models)."""

    rules = TaskRules(
        description="a place/date prior: taxa from where and when alone, trained on an occurrence store (prepare "
        "--dwca, or a manifest without filepath); predict --prior multiplies it into an image model's probabilities",
        default_backbone=BACKBONE,
        init_defaults={"data": {"batch_size": 128, "num_workers": 0},
                       "optim": {"lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 1.0},
                       "trainer": {"max_epochs": 40, "early_stopping_patience": 15, "channels_last": False}},
        not_applicable={**{key: NOT_FOR_PRIOR for key in (
            "data.image_size", "data.channels", "data.pad_fill", "data.augment", "data.signal_augment",
            "model.pretrained", "model.pretrained_path", "model.drop_path_rate", "model.kwargs", "model.candidates",
            "model.metadata_fusion", "progressive", "mix")}, **EMBEDDING_KEYS},
    )
    spec_type = OccurrenceSpec
    store_kind = OCCURRENCE_KIND
    id_columns = ("id",)
    metadata_key = "input"  # the metadata rows are the model's input
    is_prior = True

    spec: OccurrenceSpec

    def make_objective(self) -> RankClassification:
        """Per-rank classification, or SINR's presence-only loss with ``loss.prior_background`` (imported here: it
        needs torch)."""
        from taxotrain.tasks.prior_objective import PriorObjective

        return PriorObjective(self.config, self.taxonomy, self.class_counts, self.metadata_fields)

    @classmethod
    def spec_from_store(cls, config: Config, store: Store, stages: list[Stage]) -> OccurrenceSpec:
        """The encoder of ``model.metadata`` (default: every component of the store that has an encoder and a value
        in the train split)."""
        from taxotrain.data.metadata_inputs import store_layout

        has, arrays = store_layout(store).components, store.metadata() or {}
        train = store.splits["train"]
        components = list(config.model.metadata) or [c for c in has if c in METADATA_COMPONENTS
                                                     and arrays[f"{c}_valid"][train].any()]
        if not components:
            raise ConfigError(f"{store.path} has no place, date, hour or elevation metadata in its train split "
                              f"(its metadata: {', '.join(has) or 'none'}); a prior needs one of them")
        return OccurrenceSpec(metadata=cls.metadata_spec_for(config, store, components) or "")

    def build_backbone(self, pretrained: bool, drop_path_rate: float) -> nn.Module:
        """The metadata encoder (``model.metadata_*``) and ``model.prior_blocks`` residual blocks,
        ``model.metadata_hidden`` wide."""
        from taxotrain.models.metadata import MetadataEncoder
        from taxotrain.models.metadata_fusion import MetadataVector, PriorBackbone

        m = self.config.model
        if m.backbone != BACKBONE:
            raise ConfigError(f"bad value for 'model.backbone': {m.backbone!r}; task: prior takes {BACKBONE} (the "
                              "metadata encoder and a residual MLP: model.metadata_hidden, model.prior_blocks)")
        encoder = MetadataEncoder.from_spec(json.loads(self.spec.metadata))
        return PriorBackbone(MetadataVector(encoder), hidden=m.metadata_hidden, blocks=m.prior_blocks)

    def fuse_metadata(self, backbone: nn.Module) -> nn.Module:
        """Nothing to fuse: the backbone reads the metadata itself."""
        return backbone

    def dataset(self, store: Store, split: str, train: bool = False, stage: Stage | None = None,
                labels: np.ndarray | None = None) -> Dataset:
        """Records of ``split``: their metadata rows (``input``) and labels."""
        from taxotrain.data.dataset import StoreDataset, no_transform
        from taxotrain.data.metadata_inputs import no_payload

        return self.with_metadata(StoreDataset(store, store.splits[split], no_payload, no_transform, labels), store)

    def inference_dataset(self, store: Store, split: str) -> Dataset:
        """The same rows: metadata needs no preparation."""
        return self.dataset(store, split)

    def example_batch(self, batch_size: int, stage: Stage | None = None) -> dict[str, torch.Tensor]:
        """Random metadata rows and unknown labels."""
        import torch

        return {"input": self.example_input(batch_size),
                "target": torch.zeros(batch_size, len(self.taxonomy.ranks), dtype=torch.long)}

    def example_input(self, batch_size: int) -> torch.Tensor:
        """Random metadata rows ``[B, F]`` (float32)."""
        import torch

        return torch.rand(batch_size, sum(len(i) for _, i in self.metadata_fields)) * 90

    def input_preprocess(self) -> nn.Module:
        """Nothing: the encoders take raw degrees, days and hours."""
        from torch import nn

        return nn.Identity()

    def prediction_batches(self, inputs: Sequence[str | Path], batch_size: int, workers: int) -> Iterator[InputBatch]:
        """CSV files of metadata rows (Darwin Core columns: ``decimalLatitude``, ``decimalLongitude``,
        ``eventDate``, ...), each row a record named by its ``occurrenceID`` or ``id`` column (else its file and
        line). A value that cannot be used counts as missing; a header without one of the model's components is a
        one-line error."""
        from taxotrain.data.ingest import IngestError
        from taxotrain.data.metadata_inputs import is_manifest, read_rows

        for item in inputs:
            if not is_manifest(item):
                raise IngestError(f"{item}: a prior run predicts from CSV files of metadata rows (decimalLatitude, "
                                  "decimalLongitude, eventDate, ...); give such a .csv")
        seen = 0
        for item in inputs:
            path = Path(item)
            rows, metadata = read_rows(path, self.metadata_components)
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                arrays = {k: v[start : start + len(part)] for k, v in metadata.arrays.items()}
                ids = [{"id": r.get("occurrenceID") or r.get("id") or f"{path.name} line {start + i + 2}"}
                       for i, r in enumerate(part)]
                yield InputBatch(self.metadata_rows(arrays, len(part)), ids, [""] * len(part), metadata=arrays)
                seen += len(part)
        if not seen:
            raise IngestError(f"no rows in {', '.join(map(str, inputs))}")

    def workers(self, override: int | None = None) -> int:
        """``auto`` = 0: the rows sit in memory, worker processes would cost more than they save."""
        if override is None and self.config.data.num_workers == "auto":
            return 0
        return super().workers(override)

    def baselines(self, store: Store, split: str) -> dict[str, dict[str, Any]]:
        """``frequency``: per rank, the top-1 and top-5 of predicting the train split's most frequent classes (as
        training counted them, hidden labels included) for every record of ``split``."""
        import numpy as np

        from taxotrain.data.dataset import train_class_counts

        counts = train_class_counts(store, self.config.data.hide_labels, self.config.run.seed)
        labels = store.labels[store.splits[split]]
        out: dict[str, Any] = {}
        for r, rank in enumerate(self.taxonomy.ranks):
            order = np.argsort(-counts[r], kind="stable")
            y = labels[:, r][labels[:, r] >= 0]
            out[rank] = {"top1": float(np.mean(y == order[0])) if len(y) else None,
                         "top5": float(np.mean(np.isin(y, order[:5]))) if len(y) else None}
        return {"frequency": out}
