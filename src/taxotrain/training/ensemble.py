"""``taxotrain ensemble RUN_A RUN_B ... --out RUN_E``: a run whose model averages the probabilities of trained runs.

The members must be runs of the same task on the same store (fingerprint), with the same taxonomy and the same
input spec, so that one batch feeds them all: for example 5 seeds of ``inception_time`` (InceptionTime as its paper
defines it), or a network beside a ROCKET-family model. The ensemble's run folder holds ``config.yaml`` (the first
member's, with ``model.backbone: ensemble``), ``ensemble.json`` (the members) and ``checkpoints/best.ckpt`` (every
member's weights and metadata); ``evaluate``, ``predict``, ``evaluate --compare`` and, when no member is fitted in
closed form, ``export`` take it like any run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taxotrain.config import save_config
from taxotrain.errors import TaxotrainError
from taxotrain.files import write_text_atomic
from taxotrain.run import LoadedRun, load_run
from taxotrain.run_folder import RunPaths
from taxotrain.training.module import save_checkpoint

ENSEMBLE_BACKBONE = "ensemble"


class EnsembleError(TaxotrainError):
    """Runs that cannot be averaged, or an output folder that would be overwritten."""


def _check_members(runs: list[LoadedRun]) -> None:
    first = runs[0]
    for run in runs:
        if run.metadata.get("members"):
            raise EnsembleError(f"{run.root} is itself an ensemble; list its members instead")
    for run in runs[1:]:
        differs = [what for what, same in (
            ("task", run.task.name == first.task.name),
            ("taxonomy", run.taxonomy.to_dict() == first.taxonomy.to_dict()),
            ("input spec", run.task.spec.to_dict() == first.task.spec.to_dict()),
            ("store", not (run.store_fingerprint and first.store_fingerprint)
             or run.store_fingerprint == first.store_fingerprint)) if not same]
        if differs:
            raise EnsembleError(f"{run.root} differs from the first run in its {', '.join(differs)}; an ensemble's "
                                "members share a store and take the same inputs (e.g. image size)")


def make_ensemble(run_dirs: list[str | Path], out: str | Path, which: str = "best") -> Path:
    """Write the ensemble of the runs ``run_dirs`` (their ``which`` checkpoints) as the run folder ``out``."""
    if len(run_dirs) < 2:
        raise EnsembleError("an ensemble needs at least 2 runs")
    paths = RunPaths(Path(out))
    if paths.best.exists() or paths.last.exists() or paths.ensemble.exists():
        raise EnsembleError(f"{paths.root} already holds a run; choose another --out (nothing was changed)")
    runs = [load_run(d, which=which) for d in run_dirs]
    _check_members(runs)
    first = runs[0]
    config = first.config.model_copy(deep=True)
    config.run.dir = str(paths.root)
    config.model.backbone = ENSEMBLE_BACKBONE
    task = type(first.task)(config, first.taxonomy, first.task.spec)
    model = task.ensemble_model([run.model for run in runs])
    members: list[dict[str, Any]] = [run.metadata for run in runs]
    save_checkpoint(task, model, paths.best, extra={"members": members},
                    store={"store": first.store, "store_fingerprint": first.store_fingerprint})
    save_config(config, paths.config)
    write_text_atomic(paths.ensemble, json.dumps({"members": [
        {"run": str(run.root), "checkpoint": str(run.checkpoint), "backbone": run.config.model.backbone,
         "seed": run.config.run.seed} for run in runs], "combination": "mean of the members' probabilities"},
        indent=2) + "\n")
    return paths.root
