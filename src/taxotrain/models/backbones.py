"""Image backbones come from timm's registry; this only maps config keys to ``timm.create_model``."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import timm
import torch

from taxotrain.errors import TaxotrainError, brief


class BackboneError(TaxotrainError):
    """Unknown backbone name or unusable weights file."""


def create_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> torch.nn.Module:
    """A timm model without classifier (``num_classes=0``): ``forward`` returns pooled features.

    ``pretrained_path`` loads a local weights file through timm's own loader (adapting the first convolution to
    ``in_chans``), so no network is needed; ``pretrained=True`` alone fetches weights from the Hugging Face hub.
    Other ``kwargs`` (``model.kwargs``) go to ``timm.create_model``, e.g. ``{global_pool: max}``.

    Example:
        >>> net = create_backbone("resnet18", in_chans=1)
        >>> net.num_features
        512
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise BackboneError(f"unknown backbone '{name}': model.backbone takes any timm model name{hint}")
    for reserved in ("num_classes", "in_chans", "pretrained"):
        if reserved in kwargs:
            raise BackboneError(f"model.kwargs.{reserved} is set by taxotrain (from the taxonomy, data.channels and "
                                "model.pretrained); remove it from model.kwargs")
    kwargs = {**kwargs, "num_classes": 0, "in_chans": in_chans}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained_path:
        path = Path(pretrained_path)
        if not path.is_file():
            raise BackboneError(f"model.pretrained_path {path} not found; give a .safetensors/.pth file or null")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
        pretrained = True
    try:
        return _create(name, pretrained, kwargs)
    except TypeError as exc:  # an argument this model does not take
        raise BackboneError(f"model.kwargs for {name}: {str(exc).splitlines()[0]}; see the model's arguments in "
                            "timm") from exc
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, AttributeError, KeyError,
            ValueError) as exc:  # a local file is the user's input: whatever is wrong with it is one line
        if not pretrained_path:
            raise
        first = brief(exc)
        if "unsupported global" in str(exc).lower():  # a pickle that needs code to load: never loaded
            why = ("it holds pickled objects, which are never loaded (unsafe): save a plain state_dict "
                   "(torch.save(model.state_dict(), path)) or a .safetensors file")
        elif isinstance(exc, RuntimeError) and ("size mismatch" in first or "Missing key" in first
                                                or "Unexpected key" in first or "Error(s) in loading" in first):
            why = f"weights do not fit {name} ({first})"
        else:
            why = f"not a readable weights file ({first})"
        raise BackboneError(f"model.pretrained_path {pretrained_path}: {why}") from exc


def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> torch.nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # drop_path_rate on a model that has no stochastic depth: build it without
        if "drop_path_rate" in kwargs and "drop_path_rate" in str(exc):
            return timm.create_model(name, pretrained=pretrained,
                                     **{k: v for k, v in kwargs.items() if k != "drop_path_rate"})
        raise
