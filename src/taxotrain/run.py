"""Restoring a trained run: reading checkpoints safely and rebuilding its task and model (``load_run``).

The run folder's layout is in :mod:`taxotrain.run_folder`.
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
from taxotrain.errors import TaxotrainError, brief
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import Task, create_task, get_task
from taxotrain.taxonomy import Taxonomy

CKPT_KEY = "taxotrain"


class RunError(TaxotrainError):
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


@dataclass
class LoadedRun:
    """A trained model restored from a checkpoint, with its task (spec, datasets, decoding) and where it came from."""

    model: torch.nn.Module
    task: Task
    checkpoint: Path
    store: str | None = None  # the store the run was trained on
    store_fingerprint: str | None = None

    @property
    def config(self) -> Config:
        return self.task.config

    @property
    def taxonomy(self) -> Taxonomy:
        return self.task.taxonomy

    @property
    def root(self) -> Path:
        """The run folder (the checkpoint's grandparent)."""
        return self.checkpoint.parent.parent


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error for a file that is not a taxotrain checkpoint."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found; train one with `taxotrain fit` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # a real pickle that needs code to load: refused, for safety
            raise RunError(f"{path} holds pickled objects that taxotrain never loads (unsafe); point at a checkpoint "
                           "written by `taxotrain fit`") from exc
        raise RunError(f"{path} is not a loadable checkpoint ({_first_line(exc)}); point at a checkpoint written "
                       "by `taxotrain fit`") from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise RunError(f"{path} is not a loadable checkpoint ({_first_line(exc)}); point at a checkpoint written "
                       "by `taxotrain fit`") from exc
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise RunError(f"{path} is not a taxotrain checkpoint (no '{CKPT_KEY}' metadata); use a checkpoint written "
                       "by `taxotrain fit`")
    return ckpt


def _first_line(exc: BaseException) -> str:
    return brief(exc)


def checkpoint_path(target: str | Path, which: str = "best") -> Path:
    """The checkpoint of a run folder (``which`` = best or last; last when there is no best) or a checkpoint file."""
    target = Path(target)
    if not target.is_dir():
        return target
    paths = RunPaths(target)
    path = paths.best if which == "best" else paths.last
    if not path.is_file() and paths.last.is_file():
        path = paths.last
    if not path.is_file():
        raise RunError(f"{target} has no checkpoints/{which}.ckpt; is it a run folder written by `taxotrain fit`?")
    return path


def restore_task(info: dict[str, Any]) -> Task:
    """The task of a checkpoint's taxotrain metadata: its config, taxonomy and preprocessing spec (checkpoints
    written before specs existed carry an untyped ``meta`` dict, which the task turns into its spec)."""
    config = Config.model_validate(info["config"])
    taxonomy = Taxonomy.from_dict(info["taxonomy"])
    return create_task(config, taxonomy=taxonomy, spec=get_task(config.task).spec_from_checkpoint(info, config))


def load_run(target: str | Path, which: str = "best") -> LoadedRun:
    """Restore the model of a run folder (``which`` = best or last) or of a checkpoint file, in eval mode."""
    path = checkpoint_path(target, which)
    ckpt = read_checkpoint(path)
    info = ckpt[CKPT_KEY]
    task = restore_task(info)
    model = task.build_model(pretrained=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not fit model '{task.config.model.backbone}' "
                       f"({_first_line(exc)})") from exc
    model.eval()
    return LoadedRun(model, task, path, info.get("store"), info.get("store_fingerprint"))
