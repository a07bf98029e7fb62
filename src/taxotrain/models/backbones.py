"""Image backbones come from timm's registry; this only maps config keys to ``timm.create_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch


class BackboneError(ValueError):
    """Unknown backbone name or unusable weights file."""


def create_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
) -> torch.nn.Module:
    """A timm model without classifier (``num_classes=0``): ``forward`` returns pooled features.

    ``pretrained_path`` loads a local weights file through timm's own loader (adapting the first convolution to
    ``in_chans``), so no network is needed; ``pretrained=True`` alone fetches weights from the Hugging Face hub.

    Example:
        >>> net = create_backbone("resnet18", in_chans=1)
        >>> net.num_features
        512
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise BackboneError(f"unknown backbone '{name}': model.backbone takes any timm model name{hint}")
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise BackboneError(f"model.pretrained_path {path} not found; give a .safetensors/.pth file or null")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # e.g. drop_path_rate on a model that has no stochastic depth
        if "drop_path_rate" in kwargs and "drop_path_rate" in str(exc):
            kwargs.pop("drop_path_rate")
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        raise
