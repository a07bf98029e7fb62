"""The study loop behind ``taxotrain tune``: ask Optuna for params, train each trial in its own process, tell.

::

    <run.dir>/study.db              the Optuna study (SQLite; tune.storage may point elsewhere, e.g. PostgreSQL)
    <run.dir>/config.yaml           the study's resolved config (with its tune: section)
    <run.dir>/trials/0003/          trial 3: a normal run folder (config.yaml, checkpoints/, metrics.csv, fit.log,
                                    trial.json)
    <run.dir>/tune.log              one line per trial: params, state, value, epochs
    <run.dir>/best_params.yaml, trials.csv, study.json, optimization_history.png, param_importances.png,
    intermediate_values.png, study.html       the study report (see report.py)

Running the same command again resumes: finished trials are kept, a trial left running by a crash or a kill is
marked FAIL and its params are queued again, and new trials are started until ``tune.max_trials`` trials are
COMPLETE or PRUNED.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from taxotrain.config import Config, ConfigError, TuneConfig, config_to_dict, nested, save_config, validate_tree
from taxotrain.errors import TaxotrainError, brief
from taxotrain.training.engine import FitResult
from taxotrain.tuning.storage import GRACE_S, HEARTBEAT_S, journal_path, make_pruner, open_storage, storage_url
from taxotrain.tuning.trial_result import TrialResult

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_EXC_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b|: error: ")


class TuneError(TaxotrainError):
    """A study that cannot go on as asked (e.g. every trial fails); the message is one line."""


@dataclass
class TuneResult:
    """How a study session ended and where its files are."""

    study_dir: Path
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_number: int | None
    epochs_spent: int
    interrupted: bool
    files: dict[str, Path] = field(default_factory=dict)
    final: FitResult | None = None


# ----------------------------------------------------------------------------------------------- study set-up


def make_sampler(tune: TuneConfig, n_existing: int) -> optuna.samplers.BaseSampler:
    """Random or TPE. The seed is offset by the trials already in the study, so a resumed random search does not
    draw the first session's params again."""
    seed = tune.seed + n_existing
    if tune.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = tune.startup_trials if tune.startup_trials is not None else max(2, min(10, tune.max_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def direction(cfg: Config) -> str:
    """``maximize`` or ``minimize`` for ``tune.metric`` (auto follows trainer.monitor_mode, or a loss)."""
    if cfg.tune.direction != "auto":
        return cfg.tune.direction
    metric = cfg.tune.metric if cfg.tune.metric != "auto" else cfg.trainer.monitor
    if metric == "auto":
        return "maximize" if cfg.trainer.monitor_mode == "max" else "minimize"
    if metric == cfg.trainer.monitor:
        return "maximize" if cfg.trainer.monitor_mode == "max" else "minimize"
    return "minimize" if "loss" in metric else "maximize"


def _identity(cfg: Config) -> dict[str, Any]:
    """What must not change when a study is resumed."""
    tune = cfg.tune
    return {"space": {k: v.model_dump(mode="json") for k, v in tune.space.items()}, "strategy": tune.strategy,
            "metric": tune.metric, "direction": direction(cfg), "max_epochs_per_trial": tune.max_epochs_per_trial}


def _need_space(cfg: Config) -> None:
    if not cfg.tune.space:
        raise ConfigError("tune.space is empty; declare what to search, e.g. tune.space={optim.lr: {type: float, "
                          "low: 1e-4, high: 1e-2, log: true}} (see docs/tuning.md)")


def load_study(cfg: Config) -> optuna.Study:
    """Create the study, or load it to resume; refuses a resume whose space, strategy or metric changed."""
    _need_space(cfg)
    url = storage_url(cfg)
    Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)  # where the default SQLite file goes
    name = cfg.tune.study_name or Path(cfg.run.dir).resolve().name
    try:
        storage = open_storage(url)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"tune.storage {url!r} needs a database driver ({exc}); install it, e.g. "
                          "pip install psycopg2-binary") from exc
    except Exception as exc:  # sqlalchemy raises many kinds; the user needs the URL and the first line
        raise ConfigError(f"tune.storage {url!r} cannot be opened ({brief(exc)}); check the "
                          "URL, e.g. postgresql://user:password@host/db") from exc
    names = optuna.get_all_study_names(storage)
    study = optuna.create_study(study_name=name, storage=storage, direction=direction(cfg), load_if_exists=True,
                                pruner=make_pruner(cfg.tune))
    ident = _identity(cfg)
    if name in names:
        old = study.user_attrs.get("taxotrain")
        changed = [k for k in ident if old is not None and old.get(k) != ident[k]]
        if changed:
            raise ConfigError(f"the study '{name}' in {url} was started with another tune.{changed[0]} "
                              f"({old[changed[0]]!r}); resume it with the same config, or choose another run.dir "
                              "or tune.study_name")
    else:
        study.set_user_attr("taxotrain", ident)
    study.sampler = make_sampler(cfg.tune, len(study.trials))
    return study


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(study: optuna.Study, log: Any = print) -> list[int]:
    """Fail the trials left RUNNING by a study loop that is gone and queue their params again; returns their numbers.

    A trial is stale when it was started on this host by a process that no longer exists, or (another machine)
    when its heartbeat is older than the grace period.
    """
    host, now = socket.gethostname(), time.time()
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    # a storage without heartbeats (Optuna's journal file) gets one as a user attribute (run_trial)
    silent = [t for t in running.values() if now - float(t.user_attrs.get("heartbeat", now)) > GRACE_S]
    stale = [t for t in running.values() if t.user_attrs.get("host") == host and t.user_attrs.get("pid") != os.getpid()
             and not _alive(t.user_attrs.get("pid"))] + silent
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    optuna.storages.fail_stale_trials(study)  # heartbeat-based: loops on other machines that died
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    recovered = sorted(n for n in running if n in failed)
    for n in recovered:
        t = running[n]
        study.enqueue_trial(t.params, user_attrs={"retry_of": n}, skip_if_exists=False)
        log(f"trial {n} was left unfinished (process gone); it is marked FAIL and its params are queued again")
    return recovered


# ------------------------------------------------------------------------------------------------ one trial


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per searched key (the Optuna param name is the dotted key)."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
        else:
            params[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


def with_values(cfg: Config, params: dict[str, Any], **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted ``params`` (and whole-key ``sections`` patches) applied, validated."""
    from taxotrain.config import _deep_merge

    tree = _deep_merge(config_to_dict(cfg), nested(params))
    return validate_tree(_deep_merge(tree, sections))


def trial_config(cfg: Config, params: dict[str, Any], number: int) -> Config:
    """The config of trial ``number``: the study's config, the trial's params, its own run folder and epoch budget."""
    run_dir = str(Path(cfg.run.dir) / "trials" / f"{number:04d}")
    return with_values(cfg, params, run={"dir": run_dir}, trainer={"max_epochs": cfg.tune.max_epochs_per_trial})


def _child_env() -> dict[str, str]:
    """The environment of a trial process: this taxotrain first on the path, whatever else is installed."""
    import taxotrain

    src = str(Path(taxotrain.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, path]) if path else src}


@dataclass
class Outcome:
    """What a trial process left behind."""

    state: str  # complete | pruned | interrupted | failed
    value: float | None = None
    epochs: int = 0
    metric: str | None = None
    error: str | None = None
    max_rss_mb: float | None = None
    pid: int | None = None


class _Interrupts:
    """SIGINT in the study loop: first = stop the running trial cleanly and finish; second = exit at once."""

    def __init__(self, log: Any) -> None:
        self.count = 0
        self.child: subprocess.Popen[bytes] | None = None
        self.log = log

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.log("Ctrl+C: stopping the running trial after its current batch and writing the study report; "
                     "press Ctrl+C again to exit at once")
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(signal.SIGINT)
            return
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
        print("taxotrain tune: second Ctrl+C, exiting now; the running trial is re-run on resume", file=sys.stderr,
              flush=True)
        os._exit(130)


def run_trial(study: optuna.Study, trial: optuna.Trial, tcfg: Config, metric: str, url: str,
              interrupts: _Interrupts) -> Outcome:
    """Train one trial in a child process, recording heartbeats while it runs; read its ``trial.json``."""
    run_dir = Path(tcfg.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(tcfg, run_dir / "config.yaml")
    cmd = [sys.executable, "-m", "taxotrain.tuning.worker", "--config", str(run_dir / "config.yaml"),
           "--storage", url, "--study", study.study_name,
           "--trial-id", str(trial._trial_id), "--metric", metric, "--parent", str(os.getpid())]
    if study.direction == optuna.study.StudyDirection.MAXIMIZE:
        cmd.append("--maximize")
    storage = study._storage
    with (run_dir / "fit.log").open("ab") as logf:
        # its own session: a terminal's Ctrl+C reaches only this loop, which decides what the trial gets
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=_child_env(), start_new_session=True)
        interrupts.child = proc
        beat = 0.0
        try:
            while proc.poll() is None:
                if time.time() - beat > HEARTBEAT_S:
                    if hasattr(storage, "record_heartbeat"):
                        storage.record_heartbeat(trial._trial_id)
                    else:
                        storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
                    beat = time.time()
                time.sleep(0.2)
        finally:
            interrupts.child = None
    result = TrialResult.read(run_dir) if proc.returncode == 0 else None
    if result is not None:
        return Outcome(result.state, result.value, result.epochs, result.metric, max_rss_mb=result.max_rss_mb,
                       pid=result.pid)
    lines = [ln for ln in (run_dir / "fit.log").read_text(errors="replace").splitlines() if ln.strip()]
    # the exception line of a traceback (ValueError: ...), or the one-line error of a taxotrain command
    error = next((ln for ln in reversed(lines) if _EXC_LINE.search(ln)), lines[-1] if lines else "")
    state = "interrupted" if interrupts.count else "failed"
    return Outcome(state, None, _epochs_done(run_dir), None, brief(error, 300) or f"exit code {proc.returncode}")


def _epochs_done(run_dir: Path) -> int:
    csv = run_dir / "metrics.csv"
    if not csv.is_file():
        return 0
    return max(0, len(csv.read_text().splitlines()) - 1)


# ------------------------------------------------------------------------------------------------ the loop


def _check_against_store(cfg: Config) -> None:
    """Check the keys that name ranks or metrics (tune.metric, trainer.monitor, ...) against the store before the
    first trial, so a typo is one line here and not the same error in every trial's fit.log."""
    from taxotrain.data.store import Store
    from taxotrain.tasks import create_task

    create_task(cfg, store=Store(cfg.data.store)).check_config()


def tune(cfg: Config, then_fit: bool = False) -> TuneResult:
    """Run (or resume) the study that ``cfg.tune`` describes in ``cfg.run.dir``; see the module docstring.

    Example:
        >>> cfg = load_config("configs/tune_plankton.yaml", ["run.dir=runs/tune1", "tune.max_trials=4"])
        >>> result = tune(cfg)  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
        {'optim.lr': 0.0031, 'optim.weight_decay': 0.012}
    """
    from taxotrain.tuning.report import write_report

    _need_space(cfg)
    if not cfg.data.store:
        raise ConfigError("data.store is not set; give the store from `taxotrain prepare`, e.g. data.store=plankton.h5")
    if not Path(cfg.data.store).is_file():
        raise ConfigError(f"data.store {cfg.data.store} not found; write it with `taxotrain prepare`")
    _check_against_store(cfg)
    if cfg.data.fit_on != "train":
        raise ConfigError(f"'data.fit_on: {cfg.data.fit_on}' would fit every trial on val, which scores the trials; "
                          "tune with data.fit_on=train, then fit the best setting with train+val")
    study_dir = Path(cfg.run.dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    logfile = study_dir / "tune.log"

    def log(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        with logfile.open("a") as fh:
            fh.write(line + "\n")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(cfg)
    save_config(cfg, study_dir / "config.yaml")
    recover_stale(study, log)
    journal = journal_path(storage_url(cfg))
    lock_dir = journal.parent if journal is not None else study_dir  # beside a shared journal: every machine sees it
    tcfg_metric = cfg.tune.metric
    shown_metric = tcfg_metric if tcfg_metric != "auto" else "the fit's monitor (trainer.monitor)"
    n_done = sum(t.state in FINISHED for t in study.trials)
    log(f"study '{study.study_name}' ({cfg.tune.strategy}, {study.direction.name.lower()} {shown_metric}) in "
        f"{study_dir}: {n_done}/{cfg.tune.max_trials} trials finished, up to {cfg.tune.max_epochs_per_trial} "
        f"epoch(s) each")

    interrupts = _Interrupts(log)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupts) if in_main else None
    t0, failures = time.time(), 0
    try:
        while not interrupts.count:
            if cfg.tune.timeout is not None and time.time() - t0 > cfg.tune.timeout:
                log(f"tune.timeout {cfg.tune.timeout:g} s reached; no new trial is started")
                break
            with _asking(lock_dir):  # other tune processes on this study count and ask one at a time
                states = [t.state for t in study.get_trials(deepcopy=False)]
                busy = sum(s in FINISHED for s in states) + states.count(TrialState.RUNNING)
                if busy >= cfg.tune.max_trials:
                    break
                trial = study.ask()
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
            params = suggest(trial, cfg.tune.space)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
            log(f"trial {trial.number} started: {shown}")
            t_trial = time.time()
            try:
                tcfg = trial_config(cfg, params, trial.number)
            except ConfigError as exc:  # each value was checked alone; a combination can still be refused
                out = Outcome("failed", error=str(exc))
            else:
                trial.set_user_attr("run_dir", tcfg.run.dir)
                out = run_trial(study, trial, tcfg, tcfg_metric, storage_url(cfg), interrupts)
            failures = 0 if _tell(study, trial, params, out, time.time() - t_trial) else failures + 1
            frozen = study.trials[trial.number]
            value = f" {out.metric or tcfg_metric} {_fmt(frozen.value)}" if frozen.value is not None else ""
            note = f" ({out.error or out.state})" if frozen.state == TrialState.FAIL else ""
            log(f"trial {trial.number} {frozen.state.name}{value} after {out.epochs} epoch(s) in "
                f"{time.time() - t_trial:.0f} s{note}{_best_note(study)}")
            write_report(study, cfg, light=True)
            if failures >= cfg.tune.max_failures:
                where = Path(cfg.run.dir) / "trials" / f"{trial.number:04d}" / "fit.log"
                raise TuneError(f"{failures} trials in a row failed, the last with: {out.error}; see {where} "
                                f"(tune.max_failures={cfg.tune.max_failures})")
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    files = write_report(study, cfg, light=False)
    result = _result(study, cfg, bool(interrupts.count), files)
    log(f"study {'interrupted' if result.interrupted else 'done'}: " + ", ".join(
        f"{n} {s}" for s, n in result.states.items()) + f"; {result.epochs_spent} epochs spent; best "
        f"{_fmt(result.best_value)} (trial {result.best_number}) -> {files.get('best_params', 'no complete trial')}")
    if then_fit and not result.interrupted and result.best_params:
        from taxotrain.training.engine import fit

        final = with_values(cfg, result.best_params, run={"dir": str(study_dir / "final")})
        log(f"final fit with the best params for {final.trainer.max_epochs} epochs into {final.run.dir}")
        result.final = fit(final, resume="auto")
    return result


@contextlib.contextmanager
def _asking(study_dir: Path) -> Iterator[None]:
    """Hold the ask lock in ``study_dir`` (the study folder, or the folder of a shared journal file): two tune
    processes sharing a study never both start a trial past ``tune.max_trials``. Processes on machines that share
    only an RDB URL, no folder, can overshoot by one trial each at the very end."""
    import fcntl

    with (study_dir / ".ask.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tell(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any], out: Outcome, seconds: float) -> bool:
    """Finish ``trial`` in the storage from its outcome; an interrupted trial's params are queued again.
    Returns False when the trial failed on its own (not interrupted)."""
    trial.set_user_attr("epochs", out.epochs)
    trial.set_user_attr("seconds", round(seconds, 1))
    if out.metric:
        trial.set_user_attr("metric", out.metric)
    if out.max_rss_mb is not None:
        trial.set_user_attr("max_rss_mb", out.max_rss_mb)
    if out.pid is not None:
        trial.set_user_attr("pid_trial", out.pid)
    if out.state == "complete" and out.value is not None:
        study.tell(trial, out.value)
        return True
    if out.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return True
    trial.set_user_attr("error", out.error or out.state)
    study.tell(trial, state=TrialState.FAIL)
    if out.state == "interrupted":
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        return True
    return False


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _best_note(study: optuna.Study) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return ""
    return f"; best so far {_fmt(best.value)} (trial {best.number})"


def _result(study: optuna.Study, cfg: Config, interrupted: bool, files: dict[str, Path]) -> TuneResult:
    from taxotrain.tuning.report import summary

    s = summary(study, cfg)
    best = s["best"] or {}
    return TuneResult(Path(cfg.run.dir), s["states"], best.get("value"), best.get("params", {}), best.get("number"),
                      s["epochs_spent"], interrupted, files)
