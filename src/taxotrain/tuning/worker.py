"""One trial in its own process: ``python -m taxotrain.tuning.worker``, started by the study loop.

The worker trains the trial's config with the normal ``fit`` and reports the metric after every validation epoch to
the study's storage, so the pruner (Hyperband) can stop it early. It never finishes the trial in the storage: it
writes ``trial.json`` (state, value, epochs) in the trial's run folder and the study loop tells Optuna. Running each
trial in a fresh process is what keeps memory from creeping up trial after trial.

SIGINT (forwarded once by the study loop) stops training after the current batch; the trial is then reported as
``interrupted``. The worker also stops when the study loop that started it is gone.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from taxotrain.tuning.trial_result import TrialResult


class TrialReporter(L.Callback):
    """Reports ``metric`` to an Optuna trial after each validation epoch; stops on prune, SIGINT or orphaning."""

    def __init__(self, trial: Any, metric: str, maximize: bool, parent_pid: int | None = None) -> None:
        self.trial = trial
        self.metric = metric
        self.maximize = maximize
        self.parent_pid = parent_pid
        self.state = "complete"
        self.values: list[float] = []
        self.interrupted = False

    def request_stop(self, *_: Any) -> None:
        """Signal handler: finish the current batch, then stop."""
        self.interrupted = True

    def _resolve_metric(self, trainer: L.Trainer) -> str:
        if self.metric == "auto":  # the fit's own monitor (what picks best.ckpt)
            ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
            self.metric = ckpt.monitor if ckpt else "val/loss"
        return self.metric

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        orphaned = self.parent_pid is not None and os.getppid() != self.parent_pid
        if self.interrupted or orphaned:
            self.interrupted = True
            self.state = "interrupted"
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.state != "complete":
            return
        metric = self._resolve_metric(trainer)
        if metric not in trainer.callback_metrics:
            found = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise ValueError(f"tune.metric {metric!r} is not logged; use one of: {', '.join(found)}")
        value = float(trainer.callback_metrics[metric])
        self.values.append(value)
        self.trial.report(value if math.isfinite(value) else (-math.inf if self.maximize else math.inf),
                          step=len(self.values))
        if self.trial.should_prune():
            self.state = "pruned"
            trainer.should_stop = True

    def result(self) -> TrialResult:
        """What ``trial.json`` holds: the state, the best epoch's value, the epochs validated, the metric."""
        finite = [v for v in self.values if math.isfinite(v)]
        best = (max(finite) if self.maximize else min(finite)) if finite else None
        return TrialResult(self.state, best, len(self.values), self.metric, os.getpid(), _peak_rss_mb())


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this trial process in MB (Linux/macOS), to show memory does not creep across trials."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one trial; exit 0 with ``trial.json`` written, or non-zero with the error on stderr."""
    ap = argparse.ArgumentParser(prog="python -m taxotrain.tuning.worker")
    ap.add_argument("--config", type=Path, required=True, help="the trial's resolved config.yaml")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--trial-id", type=int, required=True)
    ap.add_argument("--metric", required=True)
    ap.add_argument("--maximize", action="store_true")
    ap.add_argument("--parent", type=int, help="pid of the study loop; the trial stops when it is gone")
    args = ap.parse_args(argv)

    import optuna

    from taxotrain.config import load_config
    from taxotrain.training.engine import fit
    from taxotrain.tuning.storage import make_pruner, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(args.config)
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage, heartbeat=False),
                              pruner=make_pruner(cfg.tune))
    reporter = TrialReporter(optuna.trial.Trial(study, args.trial_id), args.metric, args.maximize, args.parent)
    signal.signal(signal.SIGINT, reporter.request_stop)
    fit(cfg, resume="auto", callbacks=[reporter])
    result = reporter.result()
    result.write(Path(cfg.run.dir))
    print(f"trial {result.state}: {result.metric} {result.value} after {result.epochs} epoch(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
