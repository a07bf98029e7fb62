"""``task: signal``: 1-D series (nanopore current, leaf outlines, sensors) classified at every rank.

Inputs: a signal store's series ``[C, L]``, standardised with the train statistics (or z-normalised per series at
prepare time), time-warped, scaled and jittered for training; no test-time views. Networks come from the signal
registry (``models/signal_nets.py``); every report adds the ROCKET-family baselines. The objective is per-rank
classification (``tasks/classification.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxotrain.config import Config, TaskRules
from taxotrain.data.specs import SIGNAL_KIND, SignalSpec
from taxotrain.tasks.base import EMBEDDING_KEYS, PRIOR_KEYS, InputBatch, Task, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from taxotrain.data.store import Store
    from taxotrain.stages import Stage

IMAGE_ONLY = "image tasks (timm backbones, image transforms)"


@register_task(SIGNAL_KIND)
class SignalClassification(Task):
    """Classify 1-D series at every rank of the taxonomy (a signal set usually has one rank: class)."""

    rules = TaskRules(
        description="signal classification: 1-D series (nanopore, outlines, sensors)",
        default_backbone="resnet1d",
        candidates=("multirocket_hydra", "multirocket", "minirocket", "hydra"),
        init_defaults={"data": {"batch_size": 16},
                       "optim": {"lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 0.5, "min_lr_ratio": 0.01},
                       "loss": {"label_smoothing": 0.1},
                       "trainer": {"channels_last": False, "max_epochs": 100, "early_stopping_patience": 30},
                       "prepare": {"znorm": True}},
        not_applicable={"data.image_size": IMAGE_ONLY, "data.channels": IMAGE_ONLY, "data.pad_fill": IMAGE_ONLY,
                        "data.augment": f"{IMAGE_ONLY}; series take data.signal_augment",
                        "model.pretrained": f"{IMAGE_ONLY}; signal networks train from scratch",
                        "model.pretrained_path": f"{IMAGE_ONLY}; signal networks train from scratch",
                        "model.drop_path_rate": IMAGE_ONLY,
                        "progressive": f"{IMAGE_ONLY}: its stages grow the image size", **EMBEDDING_KEYS,
                        **PRIOR_KEYS},
    )
    spec_type = SignalSpec
    store_kind = SIGNAL_KIND
    id_columns = ("read_id", "source")
    extra_columns = ("true_class",)

    spec: SignalSpec

    @classmethod
    def spec_from_store(cls, config: Config, store: Store, stages: list[Stage]) -> SignalSpec:
        """Length and channels of the stored series; the train mean/std unless the store is z-normalised."""
        _, channels, length = store.payload.shape  # type: ignore[union-attr]
        znorm = bool(store.attrs.get("znorm"))
        return SignalSpec(length=int(length), channels=int(channels), znorm=znorm,
                          mean=None if znorm else tuple(store.attrs["mean_signal"]),
                          std=None if znorm else tuple(store.attrs["std_signal"]))

    def build_backbone(self, pretrained: bool, drop_path_rate: float) -> nn.Module:
        """``model.backbone`` from the signal-network registry (a network or a ROCKET-family model), with
        ``model.kwargs``."""
        from taxotrain.models.signal_nets import create_signal_net

        return create_signal_net(self.config.model.backbone, in_chans=self.spec.channels, length=self.spec.length,
                                 seed=self.config.run.seed, **(self.config.model.kwargs or {}))

    def transform(self, train: bool) -> nn.Module:
        """Standardisation, plus the switched-on augmentations for training."""
        from taxotrain.data.signal_transforms import build_signal_transforms

        s = self.spec
        return build_signal_transforms(s.mean, s.std, train, self.config.data.signal_augment if train else None)

    def dataset(self, store: Store, split: str, train: bool = False, stage: Stage | None = None,
                labels: np.ndarray | None = None) -> Dataset:
        """Series of ``split`` with their labels."""
        from taxotrain.data.dataset import StoreDataset
        from taxotrain.data.signal_transforms import series_tensor

        return self.with_metadata(StoreDataset(store, store.splits[split], series_tensor, self.transform(train),
                                               labels), store)

    def example_batch(self, batch_size: int, stage: Stage | None = None) -> dict[str, torch.Tensor]:
        """Random series of the spec's shape and unknown labels."""
        import torch

        return {"input": torch.randn(batch_size, self.spec.channels, self.spec.length),
                "target": torch.zeros(batch_size, len(self.taxonomy.ranks), dtype=torch.long)}

    def input_preprocess(self) -> nn.Module:
        """Standardisation with the train split's mean/std (nothing for a z-normalised store)."""
        from torch import nn

        from taxotrain.data.signal_transforms import Standardise

        s = self.spec
        return nn.Identity() if s.mean is None or s.std is None else Standardise(s.mean, s.std)

    def inference_dataset(self, store: Store, split: str) -> Dataset:
        """The stored series of ``split`` (prepared: truncated, z-normalised if asked, padded), unstandardised."""
        from taxotrain.data.dataset import StoreDataset, no_transform
        from taxotrain.data.signal_transforms import series_tensor

        return self.with_metadata(StoreDataset(store, store.splits[split], series_tensor, no_transform), store)

    def example_input(self, batch_size: int) -> torch.Tensor:
        """Random series ``[B, C, L]``."""
        import torch

        return torch.randn(batch_size, self.spec.channels, self.spec.length)

    def prediction_batches(self, inputs: Sequence[str | Path], batch_size: int, workers: int) -> Iterator[InputBatch]:
        """Every series of the Capfinder CSVs, ``.ts`` or NumPy files given, prepared as ``prepare`` stored series
        (truncated, z-normalised if the store was, padded) and streamed in batches; a bad row (or one with another
        channel count) is an error row. A label the file carries goes to ``true_class``."""
        import torch

        from taxotrain.data.ingest import IngestError
        from taxotrain.data.signals import create_reader, preprocess

        for item in inputs:
            if not Path(item).exists():
                raise IngestError(f"{item}: no such file or folder to predict")
        rows = (row for item in inputs for row in create_reader(Path(item)).rows())
        s = self.spec
        seen = 0
        while batch := list(islice(rows, batch_size)):
            errors = [r.reason or ("" if r.values is not None and r.values.shape[0] == s.channels else
                                   f"{r.values.shape[0]} channel(s), the model takes {s.channels}")  # type: ignore[union-attr]
                      for r in batch]
            good = [r for r, e in zip(batch, errors, strict=True) if not e]
            x = torch.stack([torch.from_numpy(preprocess(r.values, s.length, s.znorm))  # type: ignore[arg-type]
                             for r in good]) if good else None
            yield InputBatch(x, [{"read_id": r.read_id, "source": r.where} for r in batch], errors,
                             [{"true_class": r.label or ""} for r in batch])
            seen += len(batch)
        if not seen:
            raise IngestError(f"no series found in {', '.join(map(str, inputs))}")

    def thumbnail(self, store: Store, index: int, size: int = 96) -> bytes | None:
        """The stored series as a small line plot (PNG)."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series = store.read(index)
        length = int(store.payload.lengths[index]) or series.shape[-1]  # type: ignore[union-attr]
        fig, ax = plt.subplots(figsize=(size / 48, size / 96), dpi=96)
        for channel in series[:, :length]:
            ax.plot(channel, lw=0.8)
        ax.axis("off")
        fig.tight_layout(pad=0)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()

    def workers(self, override: int | None = None) -> int:
        """``auto`` = 0: the series sit in a memory map and the transforms are cheap, so worker processes cost more
        than they save."""
        if override is None and self.config.data.num_workers == "auto":
            return 0
        return super().workers(override)

    def epoch_columns(self, stage: Stage) -> dict[str, Any]:
        """The series length."""
        return {"length": self.spec.length}

    def baselines(self, store: Store, split: str) -> dict[str, dict[str, Any]]:
        """Every ROCKET-family model, fitted as ``fit`` fits it (its transform and a ridge per rank on the records
        the run's ``data.fit_on`` names, with the run's hidden labels) under linear heads whatever the run's head,
        and scored on ``split`` at the finest rank with the seconds its fit and prediction took; then their mean. A
        model that cannot take the store (too short series, a ridge too large for memory) is left out with the
        reason."""
        import time

        import numpy as np
        import torch

        from taxotrain.data.dataset import stack_dataset
        from taxotrain.models.ridge import fit_closed_form
        from taxotrain.models.rocket import DISPLAY_NAMES, RocketError, list_rocket_models

        x_train, y_train = self.closed_form_records(store)
        x_test, y_test = stack_dataset(self.dataset(store, split))
        known, labelled = y_test[:, -1] >= 0, int((y_train[:, -1] >= 0).sum())
        found: dict[str, dict[str, Any]] = {}
        probs = []
        for name in list_rocket_models():
            t0 = time.time()
            # each model with its own defaults under ridge heads, whatever the run's head and network settings
            task = self.without_metadata().with_backbone(name, head="linear", drop_rate=0.0, kwargs=None)
            try:
                model = task.build_model(pretrained=False).eval()
            except RocketError as exc:
                found[name] = {"name": DISPLAY_NAMES[name], "top1": None, "skipped": str(exc)}
                continue
            size = len(x_train) * model.num_features * 8
            if size > BASELINE_MEMORY:  # the ridge's leave-one-out holds records x features in float64
                found[name] = {"name": DISPLAY_NAMES[name], "top1": None, "skipped": (
                    f"{len(x_train):,} train records x {model.num_features:,} features need {size / 2**30:.1f} GiB "
                    "for the ridge; not fitted as a baseline")}
                continue
            fit_closed_form(model, x_train, y_train, self.taxonomy)
            with torch.no_grad():  # in batches: 50k features of every test series at once may not fit
                probs.append(torch.cat([model(input=x_test[i:i + 256])[self.taxonomy.finest].softmax(-1)
                                        for i in range(0, len(x_test), 256)]).numpy())
            found[name] = {"name": DISPLAY_NAMES[name], "top1": _top1(probs[-1], y_test, known),
                           "records": int(known.sum()), "train_records": labelled,
                           "seconds": round(time.time() - t0, 2),
                           "method": f"aeon {DISPLAY_NAMES[name]} ({model.num_features:,} features) + ridge per "
                                     "rank, as model.backbone=" + name}
        if len(probs) > 1:
            fitted = [f for f in found.values() if f.get("top1") is not None]
            found["mean"] = {"name": f"mean of the {len(probs)}", "top1": _top1(np.mean(probs, axis=0), y_test, known),
                             "records": int(known.sum()), "train_records": labelled,
                             "seconds": round(sum(f["seconds"] for f in fitted), 2),
                             "method": f"the mean of the {len(probs)} models' probabilities, as model.backbone=mean"}
        return found


BASELINE_MEMORY = 4 * 2**30  # bytes a baseline's ridge may take (records x features x float64)


def _top1(probs: Any, y: Any, known: Any) -> float:
    """Top-1 at the finest rank of ``probs`` [N, K] against ``y`` [N, ranks], over the records ``known`` there."""
    return float((probs.argmax(-1) == y[:, -1])[known].mean()) if known.any() else float("nan")
