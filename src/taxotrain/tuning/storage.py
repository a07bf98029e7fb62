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


JOURNAL = "journal:"


def journal_path(url: str) -> Path | None:
    """The file of a journal storage URL (``journal:/shared/study.log``, ``journal:///abs/study.log`` or a path
    ending in ``.log``/``.journal``); ``None`` for an RDB URL."""
    if url.startswith(JOURNAL):
        rest = url[len(JOURNAL):]
        return Path(rest[2:] if rest.startswith("//") else rest)
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Optuna's journal file storage (a plain file, shareable over a network file system by processes on many
    machines) for a journal URL; otherwise an RDB storage, where SQLite waits for locks instead of failing when
    trial and loop write at once."""
    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend

        journal.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
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
