"""The stages of a fit, resolved once from the config (EfficientNetV2's progressive learning, Tan & Le 2021).

Every fit runs through stages; a plain fit is one stage that spans all epochs. A stage sets the training image size,
batch size, LR scale and regularisation for epochs ``[start, end)``. The stages are looked up by epoch, so a resumed
run lands in the right one. The Lightning side (regularisation per epoch, batch-size probing) is in
``taxotrain.training.progressive``.
"""

from __future__ import annotations

from dataclasses import dataclass

from taxotrain.config import Config, ConfigError, StageConfig


@dataclass(frozen=True)
class Stage:
    """One resolved stage: epochs ``[start, end)`` and the settings used while training in them."""

    index: int
    start: int
    end: int
    image_size: int
    batch_size: int | str
    lr_scale: float
    magnitude: int
    mixup_alpha: float
    drop_rate: float
    drop_path_rate: float


def is_progressive(cfg: Config) -> bool:
    """Whether the config asks for more than the plain single stage."""
    p = cfg.progressive
    return bool(p.stages) or p.start_size is not None


def _lengths_from_stages(stages: list[StageConfig], max_epochs: int) -> list[int]:
    kinds = {("epochs" if s.epochs is not None else "fraction" if s.fraction is not None else "none") for s in stages}
    if "none" in kinds or len(kinds) > 1:
        raise ConfigError("bad value for 'progressive.stages': give every stage either epochs or fraction (not a "
                          "mix), e.g. [{epochs: 2, image_size: 32}, {epochs: 4}]")
    if kinds == {"epochs"}:
        lengths = [int(s.epochs) for s in stages]  # type: ignore[arg-type]
        if sum(lengths) > max_epochs:
            raise ConfigError(f"bad value for 'progressive.stages': they last {sum(lengths)} epochs but "
                              f"trainer.max_epochs is {max_epochs}; shorten the stages or raise trainer.max_epochs")
        lengths[-1] += max_epochs - sum(lengths)
        return lengths
    total = sum(float(s.fraction) for s in stages)  # type: ignore[arg-type]
    if abs(total - 1.0) > 1e-3:
        raise ConfigError(f"bad value for 'progressive.stages': the fractions sum to {total:g}; they must sum to 1")
    return _split_epochs(max_epochs, [float(s.fraction) for s in stages])  # type: ignore[arg-type]


def _split_epochs(max_epochs: int, fractions: list[float]) -> list[int]:
    bounds, acc = [0], 0.0
    for f in fractions:
        acc += f
        bounds.append(round(acc * max_epochs))
    lengths = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    if min(lengths) < 1:
        raise ConfigError(f"bad value for 'progressive': {len(fractions)} stages do not fit in trainer.max_epochs="
                          f"{max_epochs}; every stage needs at least one epoch")
    return lengths


def _compact_stages(cfg: Config) -> list[StageConfig]:
    """The compact form (start size, end size, number of stages) as explicit stages, regularisation interpolated."""
    p = cfg.progressive
    end = p.end_size or cfg.data.image_size
    start = int(p.start_size)  # type: ignore[arg-type]
    n = p.num_stages
    out = []
    for i in range(n):
        t = i / (n - 1) if n > 1 else 1.0
        size = end if i == n - 1 else max(p.size_multiple, round((start + t * (end - start)) / p.size_multiple)
                                          * p.size_multiple)
        reg = p.start_regularization + t * (1.0 - p.start_regularization)
        batch: int | str | None = "auto" if p.auto_batch else None
        lr_scale = 1.0
        if p.scale_batch and not p.auto_batch:
            batch = max(8, round(cfg.data.batch_size * (end / size) ** 2 / 8) * 8)
            lr_scale = (batch / cfg.data.batch_size) ** 0.5
        out.append(StageConfig(fraction=1.0 / n, image_size=size, batch_size=batch, lr_scale=lr_scale,
                               magnitude=round(cfg.data.augment.magnitude * reg), mixup_alpha=cfg.mix.mixup_alpha * reg,
                               drop_rate=cfg.model.drop_rate * reg, drop_path_rate=cfg.model.drop_path_rate * reg))
    return out


def expand_stages(cfg: Config) -> list[Stage]:
    """Resolve the config's stages: explicit ``progressive.stages``, the compact form, or one plain stage.

    Unset stage values fall back to the base config (``data.image_size``, ``data.batch_size``, ...).

    Example:
        >>> from taxotrain.config import load_config
        >>> cfg = load_config(None, ["progressive.start_size=32", "data.image_size=64", "trainer.max_epochs=8"])
        >>> [(s.start, s.end, s.image_size) for s in expand_stages(cfg)]
        [(0, 2, 32), (2, 4, 40), (4, 6, 56), (6, 8, 64)]
    """
    p, max_epochs = cfg.progressive, cfg.trainer.max_epochs
    if p.stages and p.start_size is not None:
        raise ConfigError("bad value for 'progressive': give either stages or start_size (the compact form), not both")
    if p.stages:
        specs = list(p.stages)
        lengths = _lengths_from_stages(specs, max_epochs)
    elif p.start_size is not None:
        specs = _compact_stages(cfg)
        lengths = _split_epochs(max_epochs, [1.0 / len(specs)] * len(specs))
    else:
        specs, lengths = [StageConfig()], [max_epochs]
    stages, start = [], 0
    for i, (spec, length) in enumerate(zip(specs, lengths, strict=True)):
        stages.append(Stage(
            index=i, start=start, end=start + length,
            image_size=spec.image_size or cfg.data.image_size,
            batch_size=spec.batch_size if spec.batch_size is not None else cfg.data.batch_size,
            lr_scale=spec.lr_scale,
            magnitude=spec.magnitude if spec.magnitude is not None else cfg.data.augment.magnitude,
            mixup_alpha=spec.mixup_alpha if spec.mixup_alpha is not None else cfg.mix.mixup_alpha,
            drop_rate=spec.drop_rate if spec.drop_rate is not None else cfg.model.drop_rate,
            drop_path_rate=spec.drop_path_rate if spec.drop_path_rate is not None else cfg.model.drop_path_rate,
        ))
        start += length
    return stages


def stage_at(stages: list[Stage], epoch: float) -> Stage:
    """The stage that trains epoch ``epoch`` (the last one past the end)."""
    for stage in stages:
        if epoch < stage.end:
            return stage
    return stages[-1]


def max_drop_path(stages: list[Stage]) -> float:
    """The largest drop-path rate of any stage: the model is built with it and scaled down per stage."""
    return max(s.drop_path_rate for s in stages)
