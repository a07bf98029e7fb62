"""fit through the real CLI: run folder contents, refusing to overwrite, resume after SIGKILL mid-epoch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from taxotrain.cli import main
from taxotrain.config import Config
from taxotrain.data.store import Store
from tests.conftest import FAST


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_folder_has_checkpoints_metrics_and_trackers(trained_run: Path, plankton_store: Path) -> None:
    ranks = Store(plankton_store).ranks
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(trained_run / "checkpoints" / name, weights_only=True, map_location="cpu")
        assert ckpt["taxotrain"]["taxonomy"]["ranks"] == ranks and "optimizer_states" in ckpt
        assert "RNGState" in ckpt["callbacks"]
    rows = _rows(trained_run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # last.ckpt is the final epoch even when that epoch set no new best (what --resume auto continues from)
    assert torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    for rank in ranks:
        for metric in ("top1", "top5", "macro_f1"):
            assert 0.0 <= float(rows[-1][f"val/{rank}/{metric}"]) <= 1.0
    assert float(rows[-1]["val/group/top1"]) > 0.3  # 4 groups; a model that learnt nothing sits near 0.25
    cfg = Config.model_validate(yaml.safe_load((trained_run / "config.yaml").read_text()))
    assert cfg.trainer.max_epochs == 2 and cfg.data.store == str(plankton_store)
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((trained_run / "mlruns").glob("*/*/metrics/val/class/top1"))


def test_existing_run_is_not_overwritten(trained_run: Path, plankton_store: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = (trained_run / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    code = main(["fit", f"data.store={plankton_store}", f"run.dir={trained_run}", *FAST])
    assert code == 2 and "--resume auto" in capsys.readouterr().err
    assert (trained_run / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


def test_unknown_monitor_metric_is_clear(plankton_store: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", f"data.store={plankton_store}", f"run.dir={tmp_path / 'r'}", "trainer.monitor=val/genus/top1",
                 *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "trainer.monitor" in err and "val/class/top1" in err


KILLER = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from taxotrain.config import load_config
    from taxotrain.training.engine import fit

    class KillAt(L.Callback):  # a real SIGKILL in the middle of an epoch, at a known step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(os.environ["KILL_AT_STEP"]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit(load_config(None, sys.argv[1:]), resume="auto", callbacks=[KillAt()])
""")


def test_resume_after_sigkill_matches_uninterrupted(plankton_store: Path, tmp_path: Path) -> None:
    args = [f"data.store={plankton_store}", "trainer.max_epochs=3", *FAST]
    assert main(["fit", f"run.dir={tmp_path / 'straight'}", *args]) == 0
    straight = _rows(tmp_path / "straight")
    steps_per_epoch = int(straight[0]["step"])

    killed = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "KILL_AT_STEP": str(steps_per_epoch + steps_per_epoch // 2)}
    proc = subprocess.run([sys.executable, str(script), f"run.dir={killed}", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [int(r["epoch"]) for r in _rows(killed)] == [0]
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    assert main(["fit", "--resume", "auto", f"run.dir={killed}"]) == 0  # no config given: the run's own is used
    resumed = _rows(killed)
    assert [int(r["epoch"]) for r in resumed] == [0, 1, 2]
    assert int(resumed[-1]["step"]) == int(straight[-1]["step"])
    final = [float(r["val/class/top1"]) for r in (straight[-1], resumed[-1])]
    assert abs(final[0] - final[1]) <= 0.02, final


def test_hierarchy_switches_train_every_head_with_30_percent_of_class_labels_hidden(
        plankton_store: Path, tmp_path: Path) -> None:
    from taxotrain.config import load_config
    from taxotrain.data.store import Store
    from taxotrain.run import load_run
    from taxotrain.taxonomy import NULL
    from taxotrain.training.datamodule import hide_labels

    store = Store(plankton_store)
    hidden = hide_labels(store, {"class": 0.3}, seed=0)
    train = store.splits["train"]
    frac = float((hidden[train, 2] == NULL).mean())
    assert abs(frac - 0.3) < 0.01 and (hidden[train, 0] != NULL).all()
    assert (hidden[store.splits["val"]] == store.labels[store.splits["val"]]).all()  # only train is touched

    for head in ["hierarchical_softmax", "conditional"]:
        run = tmp_path / head
        args = [f"data.store={plankton_store}", f"run.dir={run}", "trainer.max_epochs=1", f"model.head={head}",
                "loss.smoothing=taxonomic", "loss.weighting=gradnorm", "mix.mixup_alpha=0.4",
                "mix.cutmix_alpha=1.0", "mix.within=group", "data.hide_labels={class: 0.3}", *FAST]
        assert main(["fit", *args]) == 0
        trained = load_run(run).model.head.state_dict()
        torch.manual_seed(0)
        from taxotrain.tasks import create_task

        fresh = create_task(load_config(None, args), store=store).build_model(pretrained=False).head.state_dict()
        changed = {k for k in trained if not torch.equal(trained[k], fresh[k])}
        assert changed == set(trained), f"{head}: untrained head parameters {set(trained) - changed}"
        rows = _rows(run)
        assert all(f"val/{rank}/top1" in rows[0] for rank in store.ranks)


def test_ema_weights_are_what_the_checkpoint_serves(plankton_store: Path, tmp_path: Path) -> None:
    from taxotrain.run import load_run

    run = tmp_path / "ema"
    assert main(["fit", f"data.store={plankton_store}", f"run.dir={run}", "trainer.max_epochs=1", "trainer.ema=true",
                 "trainer.ema_decay=0.9", *FAST]) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" in ckpt
    key = next(k for k in ckpt["state_dict"] if k.startswith("model.") and k.endswith("weight"))
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])
    served = load_run(run, which="last").model.state_dict()
    assert torch.equal(served[key.removeprefix("model.")], ckpt["state_dict"][key])
