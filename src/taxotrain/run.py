"""The run folder: where every command finds and leaves its files, and how a trained model is restored from it.

::

    <run.dir>/config.yaml            resolved config of the fit
    <run.dir>/checkpoints/best.ckpt  best epoch by trainer.monitor;  checkpoints/last.ckpt  the latest epoch
    <run.dir>/metrics.csv            one row per epoch
    <run.dir>/mlruns/, tensorboard/  tracker files
    <run.dir>/metrics.json, per_class.csv, confusion_<rank>.png, curves_*.png, report.html   from evaluate
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taxotrain.config import Config
from taxotrain.models.classifier import build_model
from taxotrain.taxonomy import Taxonomy

CKPT_KEY = "taxotrain"


class RunError(ValueError):
    """A run folder or checkpoint that cannot be used as asked."""


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (``None`` = leave torch's setting) and restore them after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RunPaths:
    """Named paths inside a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.root / "per_class.csv"

    def predictions(self, split: str) -> Path:
        """Per-record probabilities, labels and decoded paths of the last evaluation on ``split`` (for --compare)."""
        return self.root / f"predictions_{split}.npz"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def mlflow_run_id(self) -> Path:
        return self.root / "mlflow_run_id.txt"


@dataclass
class LoadedRun:
    """A trained model restored from a checkpoint, with what is needed to feed it."""

    model: torch.nn.Module
    config: Config
    taxonomy: Taxonomy
    meta: dict[str, Any]
    checkpoint: Path

    @property
    def in_chans(self) -> int:
        return int(self.meta["in_chans"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error for a file that is not a taxotrain checkpoint."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found; train one with `taxotrain fit` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError) as exc:
        raise RunError(f"{path} is not a loadable checkpoint ({str(exc).splitlines()[0][:120]}); re-run "
                       "`taxotrain fit` or point at another file") from exc
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise RunError(f"{path} is not a taxotrain checkpoint (no '{CKPT_KEY}' metadata); use a checkpoint written "
                       "by `taxotrain fit`")
    return ckpt


def load_run(target: str | Path, which: str = "best") -> LoadedRun:
    """Restore the model of a run folder (``which`` = best or last) or of a checkpoint file, in eval mode."""
    target = Path(target)
    if target.is_dir():
        paths = RunPaths(target)
        path = paths.best if which == "best" else paths.last
        if not path.is_file() and paths.last.is_file():
            path = paths.last
        if not path.is_file():
            raise RunError(f"{target} has no checkpoints/{which}.ckpt; is it a run folder written by `taxotrain fit`?")
    else:
        path = target
    ckpt = read_checkpoint(path)
    meta = ckpt[CKPT_KEY]
    config = Config.model_validate(meta["config"])
    taxonomy = Taxonomy.from_dict(meta["taxonomy"])
    model = build_model(config.model, taxonomy, int(meta["in_chans"]), pretrained=False, task=config.task)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not fit model '{config.model.backbone}' "
                       f"({str(exc).splitlines()[0][:120]})") from exc
    model.eval()
    return LoadedRun(model, config, taxonomy, meta, path)
