"""``task: image``: organism images classified at every rank (any timm backbone, per-rank heads).

Inputs: an image store's encoded files, decoded to greyscale or RGB, resized with the aspect kept and padded to a
square, flipped and turned for training; test-time views are flips and 90-degree turns. The objective is per-rank
classification (``tasks/classification.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxotrain.config import Config, TaskRules
from taxotrain.data.specs import IMAGE_KIND, TTA_VIEWS, ImageSpec, spec_from_checkpoint
from taxotrain.tasks.base import EMBEDDING_KEYS, PRIOR_KEYS, InputBatch, Task, TaskError, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from taxotrain.data.store import Store
    from taxotrain.stages import Stage

SIGNAL_ONLY = "signal tasks (1-D series)"


@register_task(IMAGE_KIND)
class ImageClassification(Task):
    """Classify organism images at every rank of the taxonomy."""

    rules = TaskRules(
        description="image classification: organism images at every rank (any timm backbone)",
        default_backbone="resnet18",
        not_applicable={"data.signal_augment": SIGNAL_ONLY,
                        "model.candidates": f"{SIGNAL_ONLY} (model.backbone: auto chooses among closed-form models)",
                        **EMBEDDING_KEYS, **PRIOR_KEYS},
    )
    spec_type = ImageSpec
    store_kind = IMAGE_KIND
    id_columns = ("path",)
    evaluates_retrieval = True

    spec: ImageSpec

    @classmethod
    def spec_from_store(cls, config: Config, store: Store, stages: list[Stage]) -> ImageSpec:
        """Channels (``auto`` = 1 for an all-greyscale store), the train split's mean/std for them, the final stage's
        image size, the pad fill and the test-time views the augmentation implies."""
        from taxotrain.data.images import image_norm, trained_views

        channels = (1 if store.attrs.get("grayscale") else 3) if config.data.channels == "auto" \
            else int(config.data.channels)
        mean, std = image_norm(store, channels)
        return ImageSpec(image_size=stages[-1].image_size, channels=channels, mean=tuple(mean), std=tuple(std),
                         pad_fill=config.data.pad_fill, tta=trained_views(config.data.augment))

    @classmethod
    def spec_from_checkpoint(cls, info: dict[str, Any], config: Config) -> ImageSpec:
        """The saved spec; an older checkpoint's ``meta`` gets the test-time views its augmentation implies."""
        from taxotrain.data.images import trained_views

        return spec_from_checkpoint(info, tta=trained_views(config.data.augment))  # type: ignore[return-value]

    def build_backbone(self, pretrained: bool, drop_path_rate: float) -> nn.Module:
        """A timm model: ``model.backbone`` with ``model.kwargs``; ``model.pretrained_path`` (a local file) or
        ``model.pretrained`` (the hub) when ``pretrained``."""
        from taxotrain.models.backbones import create_backbone

        m = self.config.model
        return create_backbone(m.backbone, pretrained=m.pretrained and pretrained,
                               pretrained_path=m.pretrained_path if pretrained else None,
                               in_chans=self.spec.channels, drop_path_rate=drop_path_rate, **(m.kwargs or {}))

    def transform(self, train: bool, stage: Stage | None = None) -> Any:
        """Training transforms at ``stage``'s size and magnitude, or the spec's evaluation transforms."""
        from taxotrain.data.images import build_transforms

        d, s = self.config.data, self.spec
        size = stage.image_size if train and stage is not None else s.image_size
        augment = d.augment.model_copy(update={"magnitude": stage.magnitude}) if train and stage else d.augment
        return build_transforms(size, s.mean, s.std, train, augment if train else None, s.pad_fill)

    def dataset(self, store: Store, split: str, train: bool = False, stage: Stage | None = None,
                labels: np.ndarray | None = None) -> Dataset:
        """Records of ``split``: decoded, transformed images with their labels."""
        from taxotrain.data.dataset import StoreDataset
        from taxotrain.data.images import DecodeImage

        return self.with_metadata(StoreDataset(store, store.splits[split], DecodeImage(self.spec.channels),
                                               self.transform(train, stage), labels), store)

    def example_batch(self, batch_size: int, stage: Stage | None = None) -> dict[str, torch.Tensor]:
        """Random images at ``stage``'s size (the spec's without one) and unknown labels."""
        import torch

        size = stage.image_size if stage is not None else self.spec.image_size
        return {"input": torch.randn(batch_size, self.spec.channels, size, size),
                "target": torch.zeros(batch_size, len(self.taxonomy.ranks), dtype=torch.long)}

    def input_preprocess(self) -> nn.Module:
        """Raw pixel values (0-255) to the normalised floats the model trained on."""
        from taxotrain.data.images import ToNormalizedFloat

        return ToNormalizedFloat(self.spec.mean, self.spec.std)

    def _prepare(self) -> Any:
        from taxotrain.data.images import InferenceImage
        from taxotrain_runtime.images import pad_value

        return InferenceImage(self.spec.channels, self.spec.image_size, pad_value(self.spec.pad_fill, self.spec.mean))

    def inference_dataset(self, store: Store, split: str) -> Dataset:
        """Records of ``split`` decoded, resized and padded by the runtime's code, as ``predict`` reads files."""
        from taxotrain.data.dataset import StoreDataset, no_transform

        return self.with_metadata(StoreDataset(store, store.splits[split], self._prepare(), no_transform), store)

    def example_input(self, batch_size: int) -> torch.Tensor:
        """Random pixel values ``uint8`` ``[B, C, S, S]``."""
        import torch

        s = self.spec
        return torch.randint(0, 256, (batch_size, s.channels, s.image_size, s.image_size), dtype=torch.uint8)

    def prediction_batches(self, inputs: Sequence[str | Path], batch_size: int, workers: int) -> Iterator[InputBatch]:
        """Image files and folders (searched recursively), read by ``workers`` processes, and manifest CSVs (a
        ``filepath`` column relative to the CSV, and Darwin Core metadata columns: ``decimalLatitude``,
        ``decimalLongitude``, ``eventDate``, ...). Each batch carries its records' metadata (missing for files given
        directly); a CSV whose header lacks one of the model's metadata components is a one-line error."""
        from torch.utils.data import DataLoader

        from taxotrain.data.images import ImageFiles
        from taxotrain.data.ingest import IMAGE_SUFFIXES, IngestError, find_images
        from taxotrain.data.metadata_inputs import blank_arrays, concat_arrays, is_manifest, manifest_files

        files: list[Path] = []
        parts = []
        for item in inputs:
            found, arrays = manifest_files(Path(item), self.metadata_components) if is_manifest(item) \
                else (find_images([item]), None)
            files += found
            parts.append(arrays if arrays is not None else blank_arrays(len(found)))
        if not files:
            raise IngestError(f"no image files found in {', '.join(map(str, inputs))} (looked for "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}, or a manifest .csv with a filepath column)")
        arrays = concat_arrays(parts)
        start = 0
        for batch in DataLoader(ImageFiles(files, self._prepare()), batch_size=batch_size, num_workers=workers):
            errors = list(batch["error"])
            good = [start + i for i, e in enumerate(errors) if not e]
            yield InputBatch(batch["input"][[g - start for g in good]] if good else None,
                             [{"path": str(f)} for f in files[start : start + len(errors)]], errors,
                             metadata={k: v[good] for k, v in arrays.items()})
            start += len(errors)

    def thumbnail(self, store: Store, index: int, size: int = 96) -> bytes | None:
        """The stored image, its longer side scaled to ``size`` px, as PNG."""
        import io

        from PIL import Image

        from taxotrain_runtime.images import load_image

        pil = Image.fromarray(load_image(store.read(index), 3))  # 8-bit whatever the stored file (16-bit PNGs too)
        pil.thumbnail((size, size))
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        return buf.getvalue()

    def resolve_tta(self, tta: str) -> str:
        """``auto`` = the views the run's augmentation made the model invariant to (``dihedral`` by default)."""
        if tta == "auto":
            return self.spec.tta
        if tta not in TTA_VIEWS:
            raise TaskError(f"--tta {tta!r}: choose auto or one of {', '.join(TTA_VIEWS)}")
        return tta

    def views(self, x: torch.Tensor, tta: str) -> list[torch.Tensor]:
        """The flips and 90-degree turns of ``tta``."""
        from taxotrain.data.images import tta_views

        return tta_views(x, tta)

    def epoch_columns(self, stage: Stage) -> dict[str, Any]:
        """The progressive stage and its training image size."""
        return {"stage": stage.index + 1, "image_size": stage.image_size}
