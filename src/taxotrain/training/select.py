"""``model.backbone: auto``: one recipe for a new set, with no tuning, that picks its model without seeing test.

Every candidate (the task's closed-form models, e.g. the ROCKET family, or ``model.candidates``) is fitted on the
train split, and so is ``mean``, the mean of their probabilities. Each is scored by its top-1 at the finest rank on
the train records left out one at a time (exact leave-one-out of the ridge heads; for ``mean`` the mean of the
members' leave-one-out probabilities) pooled with the val records: a few dozen train series say more than the 5 val
series a small UCR set keeps, and neither is test. With ``data.fit_on: train+val`` the val records are fitted on and
scored by leave-one-out like the train records. The best score wins; ties go to ``mean``, then to the earlier
candidate (chosen on resamples of the official train splits, never test: docs/results.md). ``selection.json`` in
the run folder keeps every score and fit time, and ``fit`` then trains the winner as the run's model.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from taxotrain.config import MEAN, Config, ConfigError, candidate_names, with_model
from taxotrain.data.dataset import stack_dataset
from taxotrain.data.store import Store
from taxotrain.files import write_text_atomic
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import create_task

AUTO = "auto"


def candidates_of(cfg: Config) -> list[str]:
    """What ``model.backbone: auto`` chooses among: ``mean`` first, then ``model.candidates`` (else the task's list)."""
    return [MEAN, *candidate_names(cfg)]


def _fit_candidate(cfg: Config, store: Store, name: str, train: tuple[torch.Tensor, np.ndarray],
                   val: tuple[torch.Tensor, np.ndarray]) -> dict[str, Any]:
    """Fit candidate ``name`` on the stacked ``train`` split; its finest rank's leave-one-out probabilities on train
    and its probabilities on the known records of ``val``, and its fit time."""
    t0 = time.time()
    task = create_task(with_model(cfg, backbone=name), store=store)
    model = task.build_model(pretrained=False)
    if not task.fits_in_closed_form(model):
        raise ConfigError(f"bad value for 'model.candidates': {name!r} is trained by gradient, not in closed form; "
                          "compare networks with `taxotrain tune` and a categorical model.backbone")
    fitted = task.fit_closed_form(model, *train)[task.taxonomy.finest]
    val_probs = np.zeros((0, fitted["loo_probs"].shape[1]), dtype=np.float32)
    if len(val[0]):  # none with data.fit_on: train+val
        with torch.no_grad():
            val_probs = model.eval()(input=val[0])[task.taxonomy.finest].softmax(-1).numpy()
    return {"loo_probs": fitted["loo_probs"], "val_probs": val_probs, "seconds": time.time() - t0}


def _row(name: str, loo: np.ndarray, loo_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
         seconds: float) -> dict[str, Any]:
    loo_right, val_right = int((loo.argmax(1) == loo_labels).sum()), int((val.argmax(1) == val_labels).sum())
    return {"backbone": name, "score": (loo_right + val_right) / max(1, len(loo_labels) + len(val_labels)),
            "loo_top1": loo_right / max(1, len(loo_labels)), "train_records": len(loo_labels),
            "val_top1": val_right / len(val_labels) if len(val_labels) else None, "val_records": len(val_labels),
            "seconds": round(seconds, 2)}


def _scores(cfg: Config, store: Store) -> list[dict[str, Any]]:
    """One row per entry of :func:`candidates_of`: its score, leave-one-out and val top-1, and seconds."""
    names = candidates_of(cfg)[1:]
    # the splits as every candidate sees them (its inputs do not depend on the model): read once
    task = create_task(with_model(cfg, backbone=names[0]), store=store)
    x, targets = task.closed_form_records(store)
    if cfg.data.fit_on == "train+val":  # val is fitted on: every labelled record is scored by leave-one-out
        x_val, y_val = x[:0], targets[:0]
    else:
        x_val, y_val = stack_dataset(task.dataset(store, "val"))
    known = y_val[:, -1] >= 0
    loo_labels, val_labels = targets[targets[:, -1] >= 0, -1], y_val[known, -1]
    fitted = {name: _fit_candidate(cfg, store, name, (x, targets), (x_val[known], val_labels)) for name in names}
    mean = _row(MEAN, np.mean([f["loo_probs"] for f in fitted.values()], axis=0), loo_labels,
                np.mean([f["val_probs"] for f in fitted.values()], axis=0), val_labels,
                sum(f["seconds"] for f in fitted.values()))
    return [mean, *(_row(n, f["loo_probs"], loo_labels, f["val_probs"], val_labels, f["seconds"])
                    for n, f in fitted.items())]


def chosen_before(cfg: Config, paths: RunPaths) -> Config:
    """An ``auto`` config resolved to the choice its run folder recorded (to resume it), else unchanged."""
    if cfg.model.backbone == AUTO and paths.selection.is_file():
        return with_model(cfg, backbone=json.loads(paths.selection.read_text())["chosen"])
    return cfg


def select_backbone(cfg: Config, store: Store, paths: RunPaths) -> Config:
    """``cfg`` with ``model.backbone: auto`` replaced by the best candidate, every candidate's figures written to
    ``selection.json``."""
    rows = _scores(cfg, store)
    chosen = max(rows, key=lambda r: r["score"])["backbone"]  # max keeps the first of equal scores
    paths.root.mkdir(parents=True, exist_ok=True)
    selection = {"chosen": chosen, "criterion": "top-1 at the finest rank, train leave-one-out pooled with val; ties "
                 "go to the earlier row (mean first)", "members_of_mean": candidates_of(cfg)[1:], "candidates": rows}
    write_text_atomic(paths.selection, json.dumps(selection, indent=2) + "\n")
    print("model.backbone: auto: " + "; ".join(
        f"{r['backbone']} {r['score']:.3f} (leave-one-out {r['loo_top1']:.3f} on {r['train_records']}"
        + (f", val {r['val_top1']:.3f} on {r['val_records']}" if r["val_records"] else "")
        + f", {r['seconds']:.0f} s)" for r in rows) + f" -> {chosen}", flush=True)
    return with_model(cfg, backbone=chosen)
