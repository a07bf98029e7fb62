"""taxotrain tune on real plankton images: Ctrl+C keeps the finished trials, resume re-runs only the unfinished one,
every trial is a complete run folder, best_params.yaml reproduces the best trial, a second Ctrl+C exits at once."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import taxotrain
from taxotrain.cli import main
from taxotrain.config import load_config
from taxotrain.tuning.study import load_study, recover_stale

SPACE = ("tune.space={optim.lr: {type: float, low: 1.0e-3, high: 2.0e-2, log: true}, "
         "optim.weight_decay: {type: float, low: 0.0, high: 0.1}}")
TINY = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=32", "data.num_workers=0",
        "trainer.log_every_n_steps=1", "logging.mlflow=false", "logging.tensorboard=false",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.early_stopping_patience=null"]


def _env() -> dict[str, str]:
    src = str(Path(taxotrain.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"tune exited early: {proc.communicate()[0][-3000:]}"
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    _wait_for(path, proc, timeout)
    t0 = time.time()
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None and time.time() - t0 < timeout, f"{text!r} did not appear in {path}"
        time.sleep(0.2)


def _args(store: Path, study: Path, *extra: str) -> list[str]:
    return [f"data.store={store}", f"run.dir={study}", SPACE, "tune.strategy=random", "tune.max_trials=2",
            "tune.max_epochs_per_trial=3", "trainer.max_epochs=3", *TINY, *extra]


@pytest.fixture(scope="module")
def interrupted(plankton_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A 2-trial study stopped by one SIGINT during trial 1's second epoch (trial 0 finished)."""
    study = tmp_path_factory.mktemp("tune") / "study"
    proc = subprocess.Popen([sys.executable, "-m", "taxotrain.cli", "tune", *_args(plankton_store, study)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    _wait_for(study / "trials" / "0001" / "metrics.csv", proc)  # trial 1 finished its first of 3 epochs
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    return study, proc.returncode, out


def test_sigint_stops_the_trial_and_keeps_the_finished_one(interrupted: tuple[Path, int, str]) -> None:
    study, code, out = interrupted
    assert code == 130, out[-3000:]
    rows = _rows(study / "trials.csv")
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "WAITING")], out
    assert "interrupted" in rows[1]["note"] and 1 <= int(rows[1]["epochs"]) < 3
    assert rows[2]["optim.lr"] == rows[1]["optim.lr"] and "retry of trial 1" in rows[2]["note"]
    best = yaml.safe_load((study / "best_params.yaml").read_text())
    assert best["optim"]["lr"] == pytest.approx(float(rows[0]["optim.lr"]))
    assert (study / "study.html").is_file() and (study / "optimization_history.png").stat().st_size > 1000
    assert "stopping the running trial" in (study / "tune.log").read_text()


@pytest.fixture(scope="module")
def resumed(interrupted: tuple[Path, int, str], plankton_store: Path) -> Path:
    """The same command again, with --then-fit."""
    study = interrupted[0]
    trial0 = (study / "trials" / "0000" / "metrics.csv").stat().st_mtime_ns
    assert main(["tune", *_args(plankton_store, study), "--then-fit"]) == 0
    assert (study / "trials" / "0000" / "metrics.csv").stat().st_mtime_ns == trial0  # not redone
    return study


def test_resume_runs_only_the_unfinished_trial(resumed: Path) -> None:
    rows = _rows(resumed / "trials.csv")
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE")]
    assert rows[2]["optim.lr"] == rows[1]["optim.lr"] and int(rows[2]["epochs"]) == 3
    assert sorted(p.name for p in (resumed / "trials").iterdir()) == ["0000", "0001", "0002"]
    summary = yaml.safe_load((resumed / "study.json").read_text())
    assert summary["states"] == {"COMPLETE": 2, "FAIL": 1}
    assert summary["epochs_spent"] == 3 + int(rows[1]["epochs"]) + 3


def test_every_trial_is_a_complete_run_folder_trained_in_its_own_process(resumed: Path) -> None:
    import json

    pids = {json.loads((resumed / "trials" / n / "trial.json").read_text())["pid"] for n in ("0000", "0002")}
    assert len(pids) == 2 and os.getpid() not in pids  # a fresh process per trial: its memory goes when it ends
    assert all(float(r["max_rss_mb"]) > 0 for r in _rows(resumed / "trials.csv") if r["state"] == "COMPLETE")
    for number in ("0000", "0002"):
        run = resumed / "trials" / number
        cfg = load_config(run / "config.yaml")
        assert cfg.trainer.max_epochs == 3 and cfg.run.dir == str(run)
        assert len(_rows(run / "metrics.csv")) == 3 and (run / "fit.log").is_file()
        for name in ("best.ckpt", "last.ckpt"):
            assert torch.load(run / "checkpoints" / name, weights_only=True)["taxotrain"]["config"]["optim"]["lr"] \
                == cfg.optim.lr


def test_then_fit_with_best_params_reproduces_the_best_trial(resumed: Path) -> None:
    summary = yaml.safe_load((resumed / "study.json").read_text())
    best = summary["best"]
    final = resumed / "final"
    cfg = load_config(final / "config.yaml")
    assert cfg.optim.lr == pytest.approx(best["params"]["optim.lr"]) and cfg.trainer.max_epochs == 3
    score = max(float(r[summary["metric"]]) for r in _rows(final / "metrics.csv"))
    assert abs(score - best["value"]) <= 0.02, (score, best["value"])


def test_second_sigint_exits_at_once_and_resume_requeues(plankton_store: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "taxotrain.cli", "tune", *_args(plankton_store, study)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    _wait_for_text(study / "trials" / "0000" / "fit.log", "step 1/", proc)  # the trial is training
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "exiting now" in out, out[-3000:]

    cfg = load_config(None, _args(plankton_store, study))
    loaded = load_study(cfg)
    assert [t.state for t in loaded.trials] == [TrialState.RUNNING]  # what a kill leaves behind
    assert recover_stale(loaded, log=lambda _: None) == [0]
    again = optuna.load_study(study_name=loaded.study_name, storage=loaded._storage)
    assert [t.state for t in again.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert again.trials[1].system_attrs["fixed_params"] == again.trials[0].params


def test_hyperband_prunes_and_saves_epochs(plankton_store: Path, tmp_path: Path) -> None:
    # one Hyperband bracket (min 1, max 2 epochs, factor 3): after its first epoch a trial goes on only if it is
    # the best so far at that rung, so with a wide lr range some trials stop after one epoch
    study = tmp_path / "hb"
    args = [f"data.store={plankton_store}", f"run.dir={study}", "tune.strategy=hyperband", "tune.max_trials=4",
            "tune.max_epochs_per_trial=2", "tune.min_epochs=1", "tune.factor=3", "tune.seed=1", *TINY,
            "tune.space={optim.lr: {type: float, low: 1.0e-5, high: 3.0e-2, log: true}}"]
    assert main(["tune", *args]) == 0
    rows = _rows(study / "trials.csv")
    states = [r["state"] for r in rows]
    assert len(rows) == 4 and set(states) <= {"COMPLETE", "PRUNED"} and "PRUNED" in states, rows
    for r in rows:
        assert int(r["epochs"]) == (1 if r["state"] == "PRUNED" else 2)
        assert len(_rows(Path(r["run_dir"]) / "metrics.csv")) == int(r["epochs"])
    summary = yaml.safe_load((study / "study.json").read_text())
    assert summary["epochs_spent"] < summary["epochs_if_unpruned"] == 4 * 2
    assert "PRUNED" in (study / "tune.log").read_text()


def test_failing_trials_stop_the_study_with_the_error(plankton_store: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"data.store={plankton_store}", f"run.dir={tmp_path / 'bad'}", "tune.max_failures=1", *TINY,
            "tune.space={model.backbone: {type: categorical, choices: [no_such_net_v9]}}"]
    assert main(["tune", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no_such_net_v9" in err and "fit.log" in err, err
    rows = _rows(tmp_path / "bad" / "trials.csv")
    assert [r["state"] for r in rows] == ["FAIL"] and "no_such_net_v9" in rows[0]["note"]


def test_resume_with_another_space_is_refused(tmp_path: Path) -> None:
    from taxotrain.config import ConfigError

    base = [f"run.dir={tmp_path / 's'}"]
    load_study(load_config(None, [*base, SPACE]))
    with pytest.raises(ConfigError, match="another tune.space"):
        load_study(load_config(None, [*base, "tune.space={optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}"]))
    with pytest.raises(ConfigError, match="another tune.strategy"):
        load_study(load_config(None, [*base, SPACE, "tune.strategy=random"]))
    assert load_study(load_config(None, [*base, SPACE, "tune.max_trials=50"])).study_name == "s"


def test_refused_combination_fails_the_trial_not_the_study(tmp_path: Path, plankton_store: Path) -> None:
    # each value is valid alone (checked before the study starts), but a signal task takes no image size: every
    # trial is refused when its config is built, recorded as FAIL with the reason, and the study stops after two
    space = ("tune.space={task: {type: categorical, choices: [signal]}, "
             "data.image_size: {type: int, low: 40, high: 48}}")
    args = [f"data.store={plankton_store}", f"run.dir={tmp_path / 's'}", space, "tune.max_failures=2"]
    assert main(["tune", *args]) == 2
    rows = _rows(tmp_path / "s" / "trials.csv")
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"] and "data.image_size" in rows[0]["note"]
    assert not (tmp_path / "s" / "trials" / "0000" / "checkpoints").exists()  # refused before any training


def test_a_metric_the_store_lacks_is_refused_before_the_first_trial(plankton_store: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"data.store={plankton_store}", f"run.dir={tmp_path / 's'}", SPACE, "tune.metric=val/acc_speciez", *TINY]
    assert main(["tune", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tune.metric" in err and "val/acc_speciez" in err, err
    assert not (tmp_path / "s" / "trials").exists() and not (tmp_path / "s" / "study.db").exists()


def test_two_tune_processes_share_one_study_without_running_a_trial_twice(plankton_store: Path,
                                                                          tmp_path: Path) -> None:
    # as two machines on a shared file system would: one study folder, one journal file, two `taxotrain tune`
    study, journal = tmp_path / "shared", tmp_path / "journal" / "study.log"
    args = [*_args(plankton_store, study, f"tune.storage=journal:{journal}", "tune.max_trials=8",
                   "tune.max_epochs_per_trial=1", "trainer.max_epochs=1", "trainer.cpu_threads=1")]
    procs = [subprocess.Popen([sys.executable, "-m", "taxotrain.cli", "tune", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert not (study / "study.db").exists()  # the journal holds the study
    shared = optuna.load_study(study_name=study.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    trials = shared.trials
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["run_dir"] for t in trials}) == 8
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in procs}  # both processes took trials
    started = [ln for out in outs for ln in out.splitlines() if " started: " in ln]
    assert len(started) == 8 and len({ln.split(" started: ")[0].split()[-1] for ln in started}) == 8
    assert len(_rows(study / "trials.csv")) == 8
    assert all((study / "trials" / f"{n:04d}" / "metrics.csv").is_file() for n in range(8))


def test_a_journal_trial_whose_machine_went_silent_is_failed_and_requeued(tmp_path: Path) -> None:
    # the journal file has no heartbeat of Optuna's: the loop keeps one as a user attribute, and a trial of another
    # machine whose heartbeat is older than the grace period is failed and its params queued again
    cfg = load_config(None, [f"run.dir={tmp_path / 'j'}", SPACE, f"tune.storage=journal:{tmp_path / 'j.log'}"])
    study = load_study(cfg)
    gone, alive = study.ask(), study.ask()
    for trial, age in ((gone, 1000), (alive, 10)):
        trial.suggest_float("optim.lr", 1e-3, 2e-2, log=True)
        trial.set_user_attr("host", "another-machine")
        trial.set_user_attr("pid", 12345)
        trial.set_user_attr("heartbeat", time.time() - age)
    assert recover_stale(study, log=lambda _: None) == [gone.number]
    states = {t.number: t.state for t in study.trials}
    assert states[gone.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert study.trials[-1].state == TrialState.WAITING and study.trials[-1].user_attrs["retry_of"] == gone.number
