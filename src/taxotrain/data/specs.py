"""Preprocessing specs: everything needed to turn a raw input into what a trained model takes, as typed values.

A spec is fixed when a fit starts (from the config and the store), saved in every checkpoint, and read back by
evaluate, predict and export, so an image is resized, padded and normalised for prediction exactly as it was for
training. Specs are plain dataclasses with no torch dependency: a light inference runtime can read them too.

Checkpoints written before specs existed carry an untyped ``meta`` dict instead; :func:`spec_from_checkpoint`
turns that into the right spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from taxotrain_runtime.views import TTA_VIEWS

IMAGE_KIND, SIGNAL_KIND = "image", "signal"  # the input (and store) kinds; each task names the kind it reads
OCCURRENCE_KIND = "occurrence"  # a store of records with place/date metadata and no file (a prior's data)

TTA_MODES = ("auto", *TTA_VIEWS)  # the test-time view sets of image models; ``auto`` picks from training

_SPECS: dict[str, type[InputSpec]] = {}


def register_spec(kind: str) -> Callable[[type[InputSpec]], type[InputSpec]]:
    """Class decorator: the spec of inputs of ``kind`` (``to_dict`` writes it as ``{"kind": kind, ...}``)."""

    def wrap(cls: type[InputSpec]) -> type[InputSpec]:
        cls.kind = kind
        _SPECS[kind] = cls
        return cls

    return wrap


@dataclass(frozen=True)
class InputSpec:
    """Base of the specs: serialisation to and from plain dicts (JSON and ``torch.load(weights_only=True)`` safe)."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, with the spec's kind."""
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """The spec that ``to_dict`` wrote (unknown keys are ignored, so newer files still load)."""
        spec_cls = _SPECS.get(data.get("kind", cls.kind), cls)
        names = {f.name for f in fields(spec_cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return spec_cls(**values)

    def describe(self) -> str:
        """What the model takes, for logs and reports."""
        raise NotImplementedError


@register_spec(IMAGE_KIND)
@dataclass(frozen=True)
class ImageSpec(InputSpec):
    """An image is decoded to ``channels`` (1 = greyscale, 3 = RGB) 8-bit channels, resized so its longer side is
    ``image_size`` (aspect kept), padded to a square with ``pad_fill`` (edge, mean or zero), scaled to 0-1 and
    normalised with ``mean``/``std``. ``tta`` is the test-time view set ``--tta auto`` averages over."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad_fill: str = "edge"
    tta: str = "none"
    metadata: str | None = None  # the place/date encoder's spec (JSON, models/metadata.py) of a run with metadata

    def describe(self) -> str:
        """``48 px, 1 channel(s)``: for logs and reports."""
        return f"{self.image_size} px, {self.channels} channel(s)" + describe_metadata(self.metadata, " + ")


@register_spec(SIGNAL_KIND)
@dataclass(frozen=True)
class SignalSpec(InputSpec):
    """A series ``[channels, L]`` is truncated to ``length`` samples, z-normalised per series when ``znorm``,
    zero-padded to ``length`` and standardised with ``mean``/``std`` per channel (absent for z-normalised stores)."""

    length: int
    channels: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    znorm: bool = False
    metadata: str | None = None  # the place/date encoder's spec (JSON, models/metadata.py) of a run with metadata

    def describe(self) -> str:
        """``series of 150 samples (z-normalised per series)``: for logs and reports."""
        norm = "z-normalised per series" if self.znorm else "standardised with the train mean/std"
        return f"series of {self.length} samples ({norm}), {self.channels} channel(s)" + describe_metadata(
            self.metadata, " + ")


@register_spec(OCCURRENCE_KIND)
@dataclass(frozen=True)
class OccurrenceSpec(InputSpec):
    """An occurrence record is its place/date metadata: one float per raw value of each component the encoder takes
    (``metadata``: the encoder's spec as JSON), NaN where missing. What ``task: prior`` reads."""

    metadata: str = ""

    def describe(self) -> str:
        """``metadata: place (lat, lon), date (day_of_year)``: for logs and reports."""
        return describe_metadata(self.metadata, "").strip() or "metadata"


def describe_metadata(spec: str | None, prefix: str) -> str:
    """``prefix`` and the components of a metadata encoder's JSON spec (``metadata: place (lat, lon), ...``), or ""."""
    if not spec:
        return ""
    import json

    components = json.loads(spec).get("components", [])
    return prefix + "metadata: " + ", ".join(f"{c['name']} ({', '.join(c['inputs'])})" for c in components)


def spec_from_checkpoint(info: dict[str, Any], tta: str = "none") -> InputSpec:
    """The spec in a checkpoint's taxotrain metadata; for checkpoints written before specs, built from the old
    untyped ``meta`` keys (``kind``, ``in_chans``, ``mean``, ``std`` and ``image_size``/``pad_fill`` or
    ``length``/``znorm``), with ``tta`` (the views the run's augmentation implies) for image runs."""
    if "spec" in info:
        return InputSpec.from_dict(info["spec"])
    if "length" in info:
        return SignalSpec(length=int(info["length"]), channels=int(info["in_chans"]),
                          mean=_floats(info.get("mean")), std=_floats(info.get("std")),
                          znorm=bool(info.get("znorm", False)))
    return ImageSpec(image_size=int(info["image_size"]), channels=int(info["in_chans"]),
                     mean=_floats(info["mean"]) or (), std=_floats(info["std"]) or (),
                     pad_fill=str(info.get("pad_fill", "edge")), tta=tta)


def _floats(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)
