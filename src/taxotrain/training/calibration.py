"""Temperature scaling on the val split (Guo et al. 2017): ``taxotrain calibrate RUN`` and ``trainer.calibrate``.

A network's confidence is rarely how often it is right (over-confident after long training, under-confident after
label smoothing or mixup), so a roll-up threshold of 0.9 would not mean 90% right. One temperature per rank is
fitted on the val split's logits (minimum log loss; the top-1 at each rank does not move) and written into the
``temperature`` buffer of ``best.ckpt`` and ``last.ckpt``. ``evaluate``, ``predict``, ``export`` and the bundle then
use it with nothing to switch on. ``fit`` sets it back to 1 before any training step, so a resumed run trains on
raw logits. Models fitted in closed form (the ROCKET family) fit their temperature on leave-one-out scores already.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from taxotrain.data.dataset import train_class_counts
from taxotrain.data.store import Store
from taxotrain.files import atomic_path
from taxotrain.losses import log_prior
from taxotrain.run import CKPT_KEY, LoadedRun, RunError, load_run, read_checkpoint, torch_threads
from taxotrain.run_folder import RunPaths
from taxotrain.tasks.classification import fit_rank_temperatures, model_inputs


@dataclass
class Calibration:
    """What ``calibrate`` did: the logit adjustment's tau (if any) and per rank what was fitted on val (for
    ``best.ckpt``; each checkpoint file gets its own fit)."""

    run_dir: Path
    ranks: dict[str, dict[str, Any]]  # temperature, val log loss and ECE before and after, records; {} = not fitted
    written: list[Path]
    logit_adjustment: float | None = None

    def summary(self) -> str:
        """One line: the logit adjustment, each rank's temperature and val ECE before -> after, the files."""
        parts = [f"logit adjustment: each rank's logits less {self.logit_adjustment:g} x log(train prior)"
                 ] if self.logit_adjustment is not None else []
        if self.ranks:
            parts.append("calibrated on val: " + "; ".join(
                f"{rank} T {r['temperature']:.2f} (ECE {r['ece_before']:.3f} -> {r['ece_after']:.3f}, log loss "
                f"{r['nll_before']:.3f} -> {r['nll_after']:.3f}, {r['records']} records)"
                for rank, r in self.ranks.items()))
        return "; ".join(parts) + f"; written into {', '.join(p.name for p in self.written)}"


@torch.no_grad()
def val_logits(run: LoadedRun, store: Store, batch_size: int, workers: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every rank's logits on the val split (temperatures at 1) and the labels ``[N, ranks]``, on a GPU when
    there is one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = run.model.eval().to(device)
    run.task.reset_temperatures(model)
    loader = DataLoader(run.task.dataset(store, "val"), batch_size=batch_size, num_workers=workers)
    logits: dict[str, list[torch.Tensor]] = {rank: [] for rank in run.taxonomy.ranks}
    targets = []
    for batch in loader:
        out = model(**model_inputs(model, {k: v.to(device) for k, v in batch.items()}))
        for rank in logits:
            logits[rank].append(out[rank].float().cpu())
        targets.append(batch["target"])
    return {rank: torch.cat(v).numpy() for rank, v in logits.items()}, torch.cat(targets).numpy()


def calibrate_run(run_dir: str | Path, store: str | Path | None = None, batch_size: int = 128,
                  workers: int | None = None, threads: int | None = None,
                  logit_adjustment: float | None = None, temperature: bool = True) -> Calibration:
    """Fit one temperature per rank on the val split for each of the run's checkpoints and write it into them.

    ``logit_adjustment`` (tau) first sets the post-hoc logit adjustment of imbalanced classes: each rank's logits
    less ``tau * log(train prior)`` (Menon et al. 2021; what ``loss.logit_adjustment: predict`` does at fit), and the
    temperature is then fitted on the adjusted logits (``temperature=False`` leaves it as it is)."""
    paths = RunPaths(Path(run_dir))
    files = [p for p in (paths.best, paths.last) if p.is_file()]
    if not files:
        raise RunError(f"{run_dir} has no checkpoints; is it a run folder written by `taxotrain fit`?")
    best: dict[str, dict[str, Any]] = {}
    with torch_threads(threads):
        for path in files:
            run = load_run(path)
            if run.metadata.get("members"):
                raise RunError(f"{run_dir} is an ensemble; calibrate each member run, then write the ensemble again")
            if run.task.fits_in_closed_form(run.model):
                raise RunError(f"{run_dir} holds a model fitted in closed form ({run.config.model.backbone}): its "
                               "ridge heads fitted their temperature on leave-one-out scores already")
            if not isinstance(getattr(run.model, "temperature", None), torch.Tensor):
                raise RunError(f"{path}: this model has no temperature to fit")
            st = run.open_store(store)
            if len(st.splits["val"]) == 0:
                raise RunError(f"{st.path} has an empty val split: nothing to calibrate on; prepare it with --val")
            ckpt = read_checkpoint(path)
            if logit_adjustment is not None:
                cfg = run.config
                offsets = [logit_adjustment * log_prior(c)
                           for c in train_class_counts(st, cfg.data.hide_labels, cfg.run.seed)]
                run.model.set_prior_offsets(offsets)
                for r, offset in enumerate(offsets):
                    ckpt["state_dict"][f"model.prior_offset{r}"] = offset
            if temperature:
                logits, targets = val_logits(run, st, batch_size, run.task.workers(workers))
                fitted = fit_rank_temperatures(logits, targets)
                ckpt["state_dict"]["model.temperature"] = torch.tensor(
                    [fitted[rank]["temperature"] for rank in run.taxonomy.ranks], dtype=torch.float32)
            else:  # the temperatures stay, and so does what was recorded of their fit
                fitted = ckpt[CKPT_KEY].get("calibration", {}).get("ranks", {})
            ckpt[CKPT_KEY]["calibration"] = {"split": "val", "logit_adjustment": logit_adjustment, "ranks": fitted}
            with atomic_path(path) as tmp:
                torch.save(ckpt, tmp)
            best = best or fitted
    return Calibration(paths.root, best if temperature else {}, files, logit_adjustment)
