"""Restoring a trained run: reading checkpoints safely and rebuilding its task and model (``load_run``).

The run folder's layout is in :mod:`taxotrain.run_folder`.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from taxotrain.config import Config, one_line_error
from taxotrain.data.store import Store
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
    metadata: dict[str, Any] = field(default_factory=dict)  # the checkpoint's taxotrain metadata

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

    def open_store(self, store: str | Path | None = None, required: bool = True) -> Store | None:
        """The store to score the run on: ``store``, else the one it was trained on (its config's path, then the
        absolute path its checkpoint recorded). Refused in one line when it is missing (``None`` instead when not
        ``required``), of another kind, of another taxonomy, or, for runs that recorded it, another fingerprint."""
        candidates = [store] if store else [self.config.data.store, self.store]
        path = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
        if path is None:
            if store or required:
                raise RunError(f"the store {store or self.config.data.store} is not there; pass --store PATH")
            return None
        st = Store(path)
        try:
            self.task.check_store(st)
        except TaxotrainError as exc:
            raise RunError(f"{exc}; pass the run's own store with --store") from exc
        if self.store_fingerprint and st.fingerprint != self.store_fingerprint:
            raise RunError(f"{st.path} is not the store {self.root} was trained on: its records or split changed "
                           "since (was it prepared again?), so its test split may hold training records; use the "
                           "run's own store with --store, or train again on this one")
        if st.taxonomy.to_dict() != self.taxonomy.to_dict():
            raise RunError(f"{st.path} has a different taxonomy from the one {self.root} was trained on; pass the "
                           "run's own store with --store")
        return st


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
        raise RunError(f"{path} is not a loadable checkpoint ({brief(exc)}); point at a checkpoint written "
                       "by `taxotrain fit`") from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise RunError(f"{path} is not a loadable checkpoint ({brief(exc)}); point at a checkpoint written "
                       "by `taxotrain fit`") from exc
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt or "state_dict" not in ckpt:
        raise RunError(f"{path} is not a taxotrain checkpoint (no '{CKPT_KEY}' metadata); use a checkpoint written "
                       "by `taxotrain fit`")
    return ckpt


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
    try:
        config = Config.model_validate(info["config"])
    except ValidationError as exc:  # e.g. a task this installation does not have, or a newer version's value
        raise RunError(f"the checkpoint's config does not validate here ({one_line_error(exc)}); use the taxotrain "
                       "(and plugins) that wrote it") from exc
    taxonomy = Taxonomy.from_dict(info["taxonomy"])
    return create_task(config, taxonomy=taxonomy, spec=get_task(config.task).spec_from_checkpoint(info, config))


def load_run(target: str | Path, which: str = "best") -> LoadedRun:
    """Restore the model of a run folder (``which`` = best or last) or of a checkpoint file, in eval mode."""
    path = checkpoint_path(target, which)
    ckpt = read_checkpoint(path)
    info = ckpt[CKPT_KEY]
    task = restore_task(info)
    if info.get("members"):  # written by `taxotrain ensemble`: each member rebuilt from its own metadata
        model = task.ensemble_model([restore_task(m).build_model(pretrained=False) for m in info["members"]])
    else:
        model = task.build_model(pretrained=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not fit model '{task.config.model.backbone}' "
                       f"({brief(exc)})") from exc
    model.eval()
    return LoadedRun(model, task, path, info.get("store"), info.get("store_fingerprint"), info)
