"""Ctrl+C in fit: the first finishes the step, writes last.ckpt mid-epoch and exits 130 saying how to resume; the
resumed run ends where an uninterrupted one does. A second Ctrl+C stops at once."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from taxotrain.cli import main
from taxotrain.run import load_run

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    import taxotrain.training.engine as engine
    from taxotrain.cli import main

    class CtrlC(L.Callback):  # the terminal's Ctrl+C, as SIGINT to this process, at a known step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(os.environ["AT_STEP"]):
                for _ in range(int(os.environ["TIMES"])):
                    os.kill(os.getpid(), signal.SIGINT)

    # as in a terminal: a job started in the background by a non-interactive shell (CI's `... &`) inherits SIGINT
    # ignored, and fit, like Python, then leaves it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    original = engine.fit
    engine.fit = lambda cfg, resume=None, callbacks=None: original(cfg, resume, [CtrlC()])
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def store(synthetic_store: Path) -> Path:
    """The synthetic store (prepared once per session)."""
    return synthetic_store


def _args(store: Path, run: Path) -> list[str]:
    return ["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=2", "model.backbone=test_resnet",
            "data.image_size=32", "data.batch_size=16", "data.num_workers=0", "logging.mlflow=false",
            "logging.tensorboard=false", "trainer.cpu_threads=1", "trainer.progress=plain",
            "data.augment.hflip=0", "data.augment.vflip=0", "data.augment.rot90=false"]  # no random draws in the data


def _run(tmp_path: Path, args: list[str], at_step: int, times: int) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "ctrl_c.py"
    script.write_text(SCRIPT)
    env = {"AT_STEP": str(at_step), "TIMES": str(times), "PATH": "/usr/bin:/bin", "MLFLOW_ALLOW_FILE_STORE": "true"}
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_first_ctrl_c_saves_mid_epoch_and_the_resume_matches_an_uninterrupted_run(store: Path, tmp_path: Path
                                                                                   ) -> None:
    assert main(_args(store, tmp_path / "straight")) == 0
    steps = int(_rows(tmp_path / "straight")[0]["step"])

    run = tmp_path / "stopped"
    proc = _run(tmp_path, _args(store, run), at_step=steps + 2, times=1)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Resume with: taxotrain fit --resume auto" in proc.stderr and f"run.dir={run}" in proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == steps + 2 and ckpt["epoch"] == 1  # inside the second epoch, after the step

    assert main(["fit", "--resume", "auto", f"run.dir={run}"]) == 0
    assert [int(r["epoch"]) for r in _rows(run)] == [0, 1]
    assert _rows(run)[-1]["step"] == _rows(tmp_path / "straight")[-1]["step"]
    a = load_run(tmp_path / "straight", which="last").model.state_dict()
    b = load_run(run, which="last").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)  # the same batches, in order


def test_second_ctrl_c_stops_at_once(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "twice"
    proc = _run(tmp_path, _args(store, run), at_step=2, times=2)
    assert proc.returncode == 130 and "stopping now" in proc.stderr
    assert not (run / "checkpoints" / "last.ckpt").exists()  # stopped before any checkpoint: none half written


def test_a_moved_run_folder_resumes_with_its_best_score(store: Path, tmp_path: Path) -> None:
    import shutil

    import lightning as L

    from taxotrain.config import load_config
    from taxotrain.training.callbacks import RunCheckpoint
    from taxotrain.training.engine import fit

    class StopAfter(L.Callback):  # a run that ended after its second epoch (e.g. a job's time limit)
        def on_train_epoch_end(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    class BestAtStart(L.Callback):
        score: float | None = None

        def on_train_start(self, trainer: L.Trainer, *args: object) -> None:
            best = next(c for c in trainer.callbacks if isinstance(c, RunCheckpoint) and c.monitor)
            BestAtStart.score = None if best.best_model_score is None else float(best.best_model_score)

    args = _args(store, tmp_path / "a")[1:] + ["trainer.max_epochs=3"]
    fit(load_config(None, args), callbacks=[StopAfter()])
    saved = torch.load(tmp_path / "a" / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the folder moves: a copy elsewhere, resumed there
    fit(load_config(None, [*args, f"run.dir={tmp_path / 'b'}"]), resume="auto", callbacks=[BestAtStart()])
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint") and v["monitor"])
    assert BestAtStart.score is not None and BestAtStart.score == pytest.approx(float(state["best_model_score"]))
    rows = _rows(tmp_path / "b")
    best = torch.load(tmp_path / "b" / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    scores = [float(r["val/species/top1"]) for r in rows]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and best["epoch"] == scores.index(max(scores))
