"""Where a study lives: Optuna's RDB storage (SQLite by default) and the pruner of ``tune.strategy``.

Shared by the study loop and the trial processes, which each open the storage themselves.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from taxotrain.config import Config, TuneConfig

HEARTBEAT_S = 60  # the study loop records a heartbeat per running trial; other machines fail it after GRACE_S
GRACE_S = 300


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage; SQLite waits for locks instead of failing when trial and loop write at once."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # heartbeats are marked experimental and "meant for Study.optimize"; we record them ourselves (run_trial)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used.*")
    if heartbeat:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def storage_url(cfg: Config) -> str:
    """``tune.storage``, or a SQLite file in the study folder."""
    return cfg.tune.storage or f"sqlite:///{(Path(cfg.run.dir) / 'study.db').resolve()}"


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """Hyperband over epochs for ``strategy: hyperband``; no pruning otherwise."""
    if tune.strategy == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=tune.min_epochs, max_resource=tune.max_epochs_per_trial,
                                              reduction_factor=tune.factor)
    return optuna.pruners.NopPruner()
