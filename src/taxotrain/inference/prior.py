"""``taxotrain predict RUN INPUTS --prior PRIOR_RUN [--prior-weight W]``: late fusion of a place/date prior.

For each record the image (or signal) model's probabilities at a rank are multiplied by the prior's at the same
place and date, raised to ``W``, and renormalised to sum to 1, before consistent decoding and the roll-up:
``p(class) ∝ p_model(class) * p_prior(class) ** W`` (Mac Aodha et al. 2019's product rule; ``W = 0`` ignores the
prior, ``W > 1`` trusts it more). The prior reads the record's metadata from a manifest CSV (``decimalLatitude``,
``decimalLongitude``, ``eventDate``, ...): the prior's components must be among its columns.

The two runs are matched by name: a rank of the model is fused with the prior's rank of the same name, and each
class with the prior's class of the same name. A rank the prior lacks is left as the model gives it (a flat
prior); a class the prior lacks gets the prior's mean probability at that rank, ``1 / K`` (flat: neither favoured
nor penalised); a record with none of the prior's metadata is left as the model gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taxotrain.data.ingest import _read_csv
from taxotrain.data.metadata import layout_for
from taxotrain.data.metadata_inputs import columns_for, is_manifest, require_components
from taxotrain.run import LoadedRun, RunError, load_run
from taxotrain.tasks import InputBatch, Task
from taxotrain.taxonomy import Taxonomy


def fuse_probabilities(probs: dict[str, np.ndarray], prior: dict[str, np.ndarray], columns: dict[str, np.ndarray],
                       weight: float = 1.0, use: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``probs`` (rank -> ``[n, K]``) times ``prior`` (rank -> ``[n, K_prior]``) ** ``weight``, renormalised per row.

    ``columns[rank]`` maps each of the model's classes at ``rank`` to the prior's class of the same name (``-1``:
    the prior lacks it, and gets ``1 / K_prior``); a rank absent from ``columns`` is left alone, and so are the rows
    where ``use`` (bool ``[n]``) is False. A row whose product underflows to 0 everywhere is left alone too.
    """
    if weight == 0:
        return dict(probs)
    out = {}
    for rank, p in probs.items():
        if rank not in columns:
            out[rank] = p
            continue
        cols, q = columns[rank], prior[rank]
        factor = np.where(cols >= 0, q[:, np.maximum(cols, 0)], 1.0 / q.shape[1]) ** weight
        if use is not None:
            factor = np.where(use[:, None], factor, 1.0)
        fused = p * factor
        total = fused.sum(axis=1, keepdims=True)
        out[rank] = np.where(total > 0, fused / np.where(total > 0, total, 1.0), p).astype(p.dtype)
    return out


def match_classes(model: Taxonomy, prior: Taxonomy) -> dict[str, np.ndarray]:
    """Per rank the two taxonomies share by name: each model class's index in the prior (``-1``: not there)."""
    out = {}
    for r, rank in enumerate(model.ranks):
        if rank in prior.ranks:
            index = {name: i for i, name in enumerate(prior.names[prior.ranks.index(rank)])}
            out[rank] = np.array([index.get(name, -1) for name in model.names[r]], dtype=np.int64)
    return out


@dataclass
class PriorFusion:
    """A trained prior run, the model's classes matched to its own, and the weight of its probabilities."""

    run: LoadedRun
    columns: dict[str, np.ndarray]
    weight: float = 1.0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, prior_dir: str | Path, task: Task, weight: float = 1.0) -> PriorFusion:
        """The prior of ``prior_dir`` for the model of ``task``: a one-line error when it is not a prior run or the
        two share no class name at any rank."""
        if weight < 0 or not np.isfinite(weight):
            raise RunError(f"--prior-weight {weight}: give a number >= 0 (1: the product rule; 0: no prior)")
        if task.is_prior:
            raise RunError("--prior: the run is a prior itself; --prior fuses a prior into an image or signal run")
        run = load_run(prior_dir)
        if not run.task.is_prior:
            raise RunError(f"--prior {prior_dir} is a task: {run.task.name} run; give a run trained with task: prior")
        columns = match_classes(task.taxonomy, run.taxonomy)
        shared = {rank: int((c >= 0).sum()) for rank, c in columns.items()}
        if not any(shared.values()):
            raise RunError(f"--prior {prior_dir} shares no class name with the model at any rank (its ranks: "
                           f"{', '.join(run.taxonomy.ranks)}; the model's: {', '.join(task.taxonomy.ranks)}); both "
                           "runs must name taxa the same way")
        notes = [f"{rank} {shared[rank]}/{len(c)} classes" for rank, c in columns.items()]
        notes += [f"{rank} not in the prior" for rank in task.taxonomy.ranks if rank not in columns]
        return cls(run, columns, weight, notes)

    @property
    def components(self) -> tuple[str, ...]:
        """The metadata the prior takes."""
        return self.run.task.metadata_components

    def check_inputs(self, inputs: list[str | Path]) -> None:
        """Refuse, in one line, inputs that cannot give the prior its metadata: no manifest CSV, or one whose
        header lacks one of the prior's components."""
        manifests = [Path(i) for i in inputs if is_manifest(i)]
        if not manifests:
            raise RunError(f"--prior needs each record's place and date: give the images as a manifest CSV (a "
                           f"filepath column and the columns of the prior's {', '.join(self.components)}: "
                           f"{columns_for(self.components)})")
        for path in manifests:
            require_components(layout_for(_read_csv(path)[0]), self.components, f"{path} (for --prior)")

    def summary(self) -> str:
        """One line: the prior, its weight and what was matched."""
        return f"prior {self.run.root} at weight {self.weight:g} ({'; '.join(self.notes)})"

    def apply(self, probs: dict[str, np.ndarray], batch: InputBatch) -> dict[str, np.ndarray]:
        """The model's probabilities of ``batch``'s readable records with the prior multiplied in."""
        if not probs or batch.input is None:
            return probs
        task = self.run.task
        x = task.metadata_rows(batch.metadata, len(batch.input))
        module = task.inference_module(self.run.model)
        with torch.no_grad():
            prior = task.predict_step(module, {"input": x}, "none")
        use = torch.isfinite(x).any(dim=1).numpy()
        return fuse_probabilities(probs, prior, self.columns, self.weight, use)
