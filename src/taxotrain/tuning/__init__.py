"""Hyperparameter tuning with Optuna: ``taxotrain tune`` (random, TPE or Hyperband), resumable, Ctrl+C keeps the best.

See ``docs/tuning.md``. The study loop is in :mod:`taxotrain.tuning.study`, the per-trial process in
:mod:`taxotrain.tuning.worker`, the report in :mod:`taxotrain.tuning.report`.
"""

from taxotrain.tuning.study import TuneError, TuneResult, tune

__all__ = ["TuneError", "TuneResult", "tune"]
