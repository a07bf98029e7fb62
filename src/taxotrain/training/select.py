"""``model.backbone: auto``: one recipe for a new set, with no tuning, that picks its model without seeing test.

Every candidate (the task's closed-form models, e.g. the ROCKET family, or ``model.candidates``) is fitted on the
train split. Each is scored by its top-1 at the finest rank on the train records left out one at a time (exact
leave-one-out of the ridge heads) pooled with the val records: a few dozen train series say more than the 5 val
series a small UCR set keeps, and neither is test. The best score wins; ties go to the earlier candidate (the task
lists the strongest of the 2023 bake-off first). ``selection.json`` in the run folder keeps every candidate's score
and fit time, and ``fit`` then trains the winner as the run's model.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from taxotrain.config import Config, ConfigError, task_rules
from taxotrain.data.dataset import stack_dataset
from taxotrain.data.store import Store
from taxotrain.files import write_text_atomic
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import create_task
from taxotrain.training.datamodule import hide_labels

AUTO = "auto"


def candidates_of(cfg: Config) -> list[str]:
    """What ``model.backbone: auto`` chooses among: ``model.candidates``, else the task's own list."""
    names = list(cfg.model.candidates or task_rules(cfg.task).candidates)
    if not names:
        raise ConfigError(f"model.backbone: auto chooses among closed-form models, and task: {cfg.task} has none; "
                          "name a backbone")
    if cfg.model.kwargs:
        raise ConfigError("model.kwargs with model.backbone: auto: each candidate keeps its own defaults; remove "
                          "model.kwargs, or name the backbone")
    return names


def _score(cfg: Config, store: Store, name: str) -> dict[str, Any]:
    """Fit candidate ``name`` on train; its leave-one-out and val top-1 at the finest rank, and its fit time."""
    t0 = time.time()
    task = create_task(with_backbone(cfg, name), store=store)
    model = task.build_model(pretrained=False)
    if not task.fits_in_closed_form(model):
        raise ConfigError(f"bad value for 'model.candidates': {name!r} is trained by gradient, not in closed form; "
                          "compare networks with `taxotrain tune` and a categorical model.backbone")
    labels = hide_labels(store, cfg.data.hide_labels, cfg.run.seed)
    x, targets = stack_dataset(task.dataset(store, "train", labels=labels))
    finest = task.taxonomy.finest
    fitted = task.fit_closed_form(model, x, targets)[finest]
    x_val, y_val = stack_dataset(task.dataset(store, "val"))
    known = y_val[:, -1] >= 0
    with torch.no_grad():
        predicted = model.eval()(input=x_val)[finest].argmax(-1).numpy()
    val_right = int((predicted == y_val[:, -1])[known].sum())
    loo_right = round(fitted["loo_top1"] * fitted["records"])
    return {"backbone": name, "score": (loo_right + val_right) / max(1, fitted["records"] + int(known.sum())),
            "loo_top1": fitted["loo_top1"], "train_records": fitted["records"],
            "val_top1": val_right / max(1, int(known.sum())), "val_records": int(known.sum()),
            "seconds": round(time.time() - t0, 2)}


def with_backbone(cfg: Config, name: str) -> Config:
    """``cfg`` with ``model.backbone`` set to ``name``."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": name})})


def chosen_before(cfg: Config, paths: RunPaths) -> Config:
    """An ``auto`` config resolved to the choice its run folder recorded (to resume it), else unchanged."""
    if cfg.model.backbone == AUTO and paths.selection.is_file():
        return with_backbone(cfg, json.loads(paths.selection.read_text())["chosen"])
    return cfg


def select_backbone(cfg: Config, store: Store, paths: RunPaths) -> Config:
    """``cfg`` with ``model.backbone: auto`` replaced by the best candidate, every candidate's figures written to
    ``selection.json``."""
    rows = [_score(cfg, store, name) for name in candidates_of(cfg)]
    chosen = max(rows, key=lambda r: r["score"])["backbone"]  # max keeps the first of equal scores
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.selection, json.dumps(
        {"chosen": chosen, "criterion": "top-1 at the finest rank, train leave-one-out pooled with val; ties go to "
         "the earlier candidate", "candidates": rows}, indent=2) + "\n")
    print("model.backbone: auto: " + "; ".join(
        f"{r['backbone']} {r['score']:.3f} (leave-one-out {r['loo_top1']:.3f} on {r['train_records']}, val "
        f"{r['val_top1']:.3f} on {r['val_records']}, {r['seconds']:.0f} s)" for r in rows) + f" -> {chosen}",
        flush=True)
    return with_backbone(cfg, chosen)
