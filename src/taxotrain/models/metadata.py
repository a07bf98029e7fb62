"""Place, date and other record metadata as model input: per-component encoders, their MLP, and fusion modules.

A *component* is one kind of metadata with its raw columns: ``place`` (lat, lon in degrees), ``date`` (day of year),
``hour``, ``elevation`` (metres). Each has an encoder from a registry (``create_metadata_encoder``) that maps the raw
values ``[B, k]`` and a validity mask ``[B]`` to features ``[B, out_dim]``, zero where the component is missing or
masked: every valid encoding holds at least one (sin, cos) pair or a unit vector, so zero is never a real value and
needs no separate flag. :class:`MetadataEncoder` concatenates the components and passes them through a small MLP to
an embedding ``[B, dim]``; a fusion module (``create_fusion``: ``concat`` or ``film``) joins it to the embedding of
the backbone. ``MetadataEncoder.spec()`` is JSON-able and rebuilds the encoder (``from_spec``), so a saved model can
refuse input whose components differ (:func:`check_layout`).

Example:
    >>> enc = MetadataEncoder({"place": {"frequencies": 2}, "date": {}}, dim=8)
    >>> enc({"place": torch.tensor([[48.85, 2.35]]), "date": torch.tensor([[172.0]])}).shape
    torch.Size([1, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from taxotrain.errors import TaxotrainError
from taxotrain.registry import Registry

SPEC_VERSION = 1


class MetadataError(TaxotrainError):
    """Unknown encoder or fusion, bad options, or metadata whose layout does not match the model."""


ENCODERS: Registry[type[ComponentEncoder]] = Registry("metadata encoder", error=MetadataError)
FUSIONS: Registry[Callable[..., nn.Module]] = Registry("metadata fusion", error=MetadataError)


class ComponentEncoder(nn.Module):
    """Base of the component encoders: ``forward(values [B, k], valid [B] | None) -> features [B, out_dim]``.

    Subclasses set ``inputs`` (the names of the k raw columns), ``out_dim`` and ``options`` (their JSON-able
    constructor arguments) and implement :meth:`encode`. A record whose mask is False, or any of
    whose raw values is not finite (NaN for missing), gets all-zero features.
    """

    inputs: tuple[str, ...] = ()
    out_dim: int
    options: dict[str, Any]

    @property
    def in_dim(self) -> int:
        """Number of raw values per record."""
        return len(self.inputs)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """Features of raw values ``[B, k]`` (float32); what it gives for a non-finite value is discarded."""
        raise NotImplementedError

    def forward(self, values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[B, out_dim]`` of ``values`` ``[B, k]`` (``[B]`` when k is 1), zero where ``valid`` is False or
        a value is not finite."""
        if values.ndim == 1 and self.in_dim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != self.in_dim:
            raise MetadataError(f"{type(self).__name__} takes [batch, {self.in_dim}] values ({', '.join(self.inputs)})"
                                f"; got shape {list(values.shape)}")
        values = values.float()
        ok = torch.isfinite(values).all(dim=1)
        if valid is not None:
            ok = ok & valid.to(device=ok.device, dtype=torch.bool).reshape(-1)
        features = self.encode(values)
        return torch.where(ok[:, None], features, torch.zeros_like(features))  # where, not *: NaN * 0 is NaN


def register_metadata_encoder(name: str) -> Callable[[type[ComponentEncoder]], type[ComponentEncoder]]:
    """Decorator that makes a :class:`ComponentEncoder` subclass available as the metadata encoder ``name``."""
    return ENCODERS.register(name)


def list_metadata_encoders() -> list[str]:
    """Names of the registered metadata encoders."""
    return ENCODERS.names()


def create_metadata_encoder(name: str, **kwargs: Any) -> ComponentEncoder:
    """Build the encoder registered as ``name``; ``None`` keyword arguments keep the encoder's own defaults.

    Example:
        >>> create_metadata_encoder("place", frequencies=3).out_dim
        15
    """
    encoder = ENCODERS.get(name)  # an unknown name: a one-line MetadataError
    try:
        return encoder(**{k: v for k, v in kwargs.items() if v is not None})
    except TypeError as exc:  # an option this encoder does not take
        raise MetadataError(f"metadata encoder '{name}': {str(exc).splitlines()[0]}") from exc


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MetadataError(f"metadata option {name} must be an integer >= 0; got {value!r}")
    return value


@register_metadata_encoder("place")
class PlaceEncoder(ComponentEncoder):
    """(lat, lon) in degrees -> the point on the unit sphere (x, y, z), plus ``frequencies`` sinusoidal octaves.

    Octave i (scale ``2**i``) adds sin and cos of ``2**i * lat`` and of ``2**i * lon``, the longitude pair weighted
    by cos(lat), the length of the parallel: at a pole, where every longitude is one point, it vanishes, so the
    features are continuous over the poles; integer scales make lon 180 and -180 identical. ``out_dim = 3 + 4 n``.
    """

    inputs = ("lat", "lon")

    def __init__(self, frequencies: int = 0) -> None:
        super().__init__()
        n = _non_negative_int("frequencies", frequencies)
        self.options = {"frequencies": n}
        self.out_dim = 3 + 4 * n
        self.register_buffer("scales", 2.0 ** torch.arange(n, dtype=torch.float32), persistent=False)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        lat, lon = torch.deg2rad(values).unbind(dim=1)
        xyz = [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
        la = lat[:, None] * self.scales
        lo = lon[:, None] * self.scales
        parallel = lat.cos()[:, None]
        return torch.cat([torch.stack(xyz, dim=1), la.sin(), la.cos(), parallel * lo.sin(), parallel * lo.cos()], 1)


class _CyclicEncoder(ComponentEncoder):
    """One cyclic value -> sin, cos of ``k * 2 pi (value - origin) / period`` for k = 1 .. ``harmonics``."""

    origin = 0.0
    period = 1.0

    def __init__(self, harmonics: int = 1) -> None:
        super().__init__()
        n = _non_negative_int("harmonics", harmonics)
        if n == 0:
            raise MetadataError(f"{type(self).__name__}: harmonics must be at least 1")
        self.options = {"harmonics": n}
        self.out_dim = 2 * n
        self.register_buffer("multiples", torch.arange(1, n + 1, dtype=torch.float32), persistent=False)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * (values - self.origin) / self.period * self.multiples
        return torch.cat([angle.sin(), angle.cos()], dim=1)


@register_metadata_encoder("date")
class DateEncoder(_CyclicEncoder):
    """Day of year (1 = 1 January .. 366, float) on a circle of 365.25 days: 31 December sits next to 1 January."""

    inputs = ("day_of_year",)
    origin = 1.0
    period = 365.25


@register_metadata_encoder("hour")
class HourEncoder(_CyclicEncoder):
    """Hour of the day (0 .. 24, float, local or UTC as the data gives it) on a circle: 23:54 sits next to 00:06."""

    inputs = ("hour",)
    period = 24.0


@register_metadata_encoder("elevation")
class ElevationEncoder(ComponentEncoder):
    """Metres (negative below sea level) -> sin and cos of ``value / scale`` for each scale, plus optionally
    ``value / linear_scale``.

    A scale s resolves differences of about s metres and repeats every ``2 pi s``; the default scales (100 m, 1 km,
    10 km) resolve a slope and a mountain belt, and no two heights on Earth share the 10 km pair. Use it for depth
    too (as its own component name, with its own scales).
    """

    inputs = ("elevation",)  # metres, the field name of taxotrain.data.metadata

    def __init__(self, scales: Sequence[float] = (100.0, 1000.0, 10000.0), linear_scale: float | None = None) -> None:
        super().__init__()
        scales = [float(s) for s in scales]
        if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
            raise MetadataError(f"elevation scales must be one or more positive numbers (metres); got {scales}")
        if linear_scale is not None and not (math.isfinite(linear_scale) and linear_scale > 0):
            raise MetadataError(f"elevation linear_scale must be positive (metres) or null; got {linear_scale}")
        self.linear_scale = None if linear_scale is None else float(linear_scale)
        self.options = {"scales": scales, "linear_scale": self.linear_scale}
        self.out_dim = 2 * len(scales) + int(self.linear_scale is not None)
        self.register_buffer("scales", torch.tensor(scales), persistent=False)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        angle = values / self.scales
        parts = [angle.sin(), angle.cos()]
        if self.linear_scale is not None:
            parts.append(values / self.linear_scale)
        return torch.cat(parts, dim=1)


ComponentSpecs = Mapping[str, Mapping[str, Any] | None] | Sequence[str]


class MetadataEncoder(nn.Module):
    """Several components -> concatenated features -> MLP -> embedding ``[B, dim]``.

    ``components`` maps each component's name (the key of its values in the batch) to its options; ``encoder``
    among them picks the registered encoder (default: the name itself), e.g. ``{"place": {"frequencies": 4},
    "date": {}, "depth": {"encoder": "elevation", "scales": [1, 10, 100]}}``; a list of names takes the defaults.
    ``depth`` counts the linear layers (1: a single linear map to ``dim``); each but the last is followed by GELU
    and dropout. A record with every component missing gets the MLP's constant output, a learnt "no metadata".
    """

    def __init__(self, components: ComponentSpecs, dim: int = 64, hidden: int = 128, depth: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        specs = {name: {} for name in components} if not isinstance(components, Mapping) else components
        if not specs:
            raise MetadataError("metadata needs at least one component (place, date, hour, elevation)")
        if depth < 1 or dim < 1 or hidden < 1 or not 0.0 <= dropout < 1.0:
            raise MetadataError(f"metadata MLP: dim, hidden and depth must be >= 1 and dropout in [0, 1); got dim={dim}"
                                f", hidden={hidden}, depth={depth}, dropout={dropout}")
        self.encoders = nn.ModuleDict()
        self.kinds: dict[str, str] = {}
        for name, options in specs.items():
            options = dict(options or {})
            self.kinds[name] = str(options.pop("encoder", name))
            self.encoders[name] = create_metadata_encoder(self.kinds[name], **options)
        self.names = tuple(specs)
        self.out_dim = dim
        self.mlp_options = {"dim": dim, "hidden": hidden, "depth": depth, "dropout": dropout}
        widths = [sum(e.out_dim for e in self.encoders.values())] + [hidden] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                layers += [nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self._layout = {n: e.in_dim for n, e in self.encoders.items()}

    def encode_components(self, values: Mapping[str, torch.Tensor],
                          valid: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The concatenated per-component features ``[B, sum of out_dim]``, before the MLP."""
        self.check_layout(values)
        valid = valid or {}
        extra = set(valid) - set(self.names)
        if extra:
            raise MetadataError(f"metadata masks for unknown components {sorted(extra)}; the model's components: "
                                f"{', '.join(self.names)}")
        return torch.cat([self.encoders[n](values[n], valid.get(n)) for n in self.names], dim=1)

    def forward(self, values: Mapping[str, torch.Tensor],
                valid: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Embedding ``[B, dim]`` of the values (``{component: [B, k]}``) and their validity masks (``{component:
        bool [B]}``; a component without one is valid wherever its values are finite)."""
        return self.mlp(self.encode_components(values, valid))

    def spec(self) -> dict[str, Any]:
        """JSON-able description (components in order with their encoder, options, raw inputs and widths; the MLP)
        from which :meth:`from_spec` rebuilds the same architecture."""
        components = [{"name": n, "encoder": self.kinds[n], "options": dict(e.options), "inputs": list(e.inputs),
                       "out_dim": e.out_dim} for n, e in self.encoders.items()]
        return {"version": SPEC_VERSION, "components": components, **self.mlp_options}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> MetadataEncoder:
        """Rebuild from :meth:`spec`; refuses a spec that this version would build differently."""
        if spec.get("version") != SPEC_VERSION or not isinstance(spec.get("components"), list):
            raise MetadataError(f"unreadable metadata spec (version {spec.get('version')!r}; this taxotrain reads "
                                f"version {SPEC_VERSION})")
        components = {c["name"]: {"encoder": c["encoder"], **c["options"]} for c in spec["components"]}
        enc = cls(components, **{k: spec[k] for k in ("dim", "hidden", "depth", "dropout")})
        rebuilt = enc.spec()["components"]
        if rebuilt != spec["components"]:
            raise MetadataError(f"metadata spec does not rebuild the same encoders: saved {_describe_spec(spec)}, "
                                f"rebuilt {_describe_spec(enc.spec())}")
        return enc

    def check_layout(self, given: Mapping[str, torch.Tensor | int] | Iterable[str]) -> None:
        """Raise :class:`MetadataError` unless ``given`` (values by component, widths by component, or names) has
        exactly this model's components, with the right widths."""
        if isinstance(given, Mapping) and {n: _width(v) for n, v in given.items()} == self._layout:
            return  # the per-batch case, without building the spec
        check_layout(self.spec(), given)


def _layout_of_spec(spec: Mapping[str, Any]) -> dict[str, int]:
    return {c["name"]: len(c["inputs"]) for c in spec["components"]}


def _describe_spec(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{c['name']}({', '.join(c['inputs'])})" for c in spec["components"])


def _width(value: torch.Tensor | int) -> int:
    if isinstance(value, int):
        return value
    return 1 if value.ndim == 1 else int(value.shape[-1])


def check_layout(spec: Mapping[str, Any], given: Mapping[str, torch.Tensor | int] | Iterable[str]) -> None:
    """Raise a one-line :class:`MetadataError` naming the expected and given components unless ``given`` (values
    or widths by component name, or just the names) matches the components of ``spec`` (a ``MetadataEncoder.spec()``,
    e.g. read from a saved model). Order does not matter; widths are checked when given."""
    expected = _layout_of_spec(spec)
    if isinstance(given, Mapping):
        widths = {name: _width(v) for name, v in given.items()}
        same = widths == expected
        shown = ", ".join(f"{n}[{w}]" for n, w in widths.items())
    else:
        names = list(given)
        same = sorted(names) == sorted(expected)
        shown = ", ".join(names)
    if not same:
        want = ", ".join(f"{c['name']}[{len(c['inputs'])}: {', '.join(c['inputs'])}]" for c in spec["components"])
        raise MetadataError(f"metadata layout does not match the model: it expects {want}; given {shown or 'none'}")


def register_fusion(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that makes a fusion module constructor ``(image_dim, meta_dim, **options)`` available as ``name``."""
    return FUSIONS.register(name)


def list_fusions() -> list[str]:
    """Names of the registered fusion modules."""
    return FUSIONS.names()


def create_fusion(name: str, image_dim: int, meta_dim: int, **kwargs: Any) -> nn.Module:
    """Build the fusion registered as ``name``: ``forward(image [B, image_dim], meta [B, meta_dim]) -> [B,
    out_dim]``; ``None`` keyword arguments keep the module's own defaults."""
    return FUSIONS.create(name, image_dim, meta_dim, **kwargs)


@register_fusion("concat")
class ConcatFusion(nn.Module):
    """``[image, meta]`` side by side; the head sees both (``out_dim = image_dim + meta_dim``)."""

    def __init__(self, image_dim: int, meta_dim: int) -> None:
        super().__init__()
        self.out_dim = image_dim + meta_dim

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return torch.cat([image, meta.to(image.dtype)], dim=1)


@register_fusion("film")
class FiLMFusion(nn.Module):
    """FiLM (Perez et al. 2018): the metadata scales and shifts each channel, ``image * (1 + g(meta)) + b(meta)``.

    The linear map to (g, b) starts at zero, so at initialisation the output is the embedding itself and a
    pretrained backbone's features are untouched until the metadata earns its say. ``out_dim = image_dim``.
    """

    def __init__(self, image_dim: int, meta_dim: int) -> None:
        super().__init__()
        self.out_dim = image_dim
        self.to_scale_shift = nn.Linear(meta_dim, 2 * image_dim)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(meta).chunk(2, dim=1)
        return image * (1 + scale) + shift
