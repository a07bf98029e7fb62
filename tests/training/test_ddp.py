"""Two processes on the CPU (DDP over gloo) against one: each process trains its own half of every epoch (half the
optimizer steps), validation is reduced over both (the logged figures are those of the whole val split), one
metrics.csv is written with one row per epoch, and a 2-process run killed mid-way resumes to the same epoch count."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from taxotrain.data.store import Store
from taxotrain.training.datamodule import drops_last_batch
from tests.tasks.conftest import metadata_manifest, metadata_store  # noqa: F401 (fixtures: a store with metadata)

RUN = [sys.executable, "-m", "taxotrain.cli"]  # Lightning relaunches `python -m taxotrain.cli ...` per process
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def _args(store: Path, run: Path, epochs: int = 3) -> list[str]:
    return ["fit", f"data.store={store}", f"run.dir={run}", f"trainer.max_epochs={epochs}",
            "model.backbone=test_resnet", "data.image_size=32", "data.num_workers=0", "logging.mlflow=false",
            "logging.tensorboard=false", "trainer.cpu_threads=1", "trainer.progress=plain",
            "trainer.early_stopping_patience=null"]


def _env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONUNBUFFERED": "1"}


def _fit(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*RUN, *args], env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


BATCH = 16


def _steps(records: int, batch: int) -> int:
    """Optimizer steps of one epoch over ``records`` (the last, small batch is dropped by the data module's rule)."""
    return records // batch + int(records % batch > 0 and not drops_last_batch(records, batch))


@pytest.fixture(scope="module")
def batch() -> int:
    return BATCH


@pytest.fixture(scope="module")
def runs(plankton_store: Path, batch: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """The same tiny fit in one process, in two, and in one with the two processes' global batch."""
    root = tmp_path_factory.mktemp("ddp")
    out: dict[str, Path | str] = {"one": root / "one", "two": root / "two", "one_global": root / "one_global"}
    _fit([*_args(plankton_store, out["one"]), f"data.batch_size={batch}"])
    _fit([*_args(plankton_store, out["one_global"]), f"data.batch_size={2 * batch}"])
    out["stdout"] = _fit([*_args(plankton_store, out["two"]), f"data.batch_size={batch}", *DDP]).stdout
    return out


def test_two_processes_each_train_half_of_every_epoch(runs: dict, plankton_store: Path, batch: int) -> None:
    one, two, out = runs["one"], runs["two"], runs["stdout"]
    n = len(Store(plankton_store).splits["train"])
    steps_one = [int(r["step"]) for r in _rows(one)]
    steps_two = [int(r["step"]) for r in _rows(two)]
    assert steps_one == [_steps(n, batch) * e for e in (1, 2, 3)]
    assert steps_two == [_steps(-(-n // 2), batch) * e for e in (1, 2, 3)]
    assert steps_two[0] <= steps_one[0] // 2 + 1
    assert out.count("fit done") == 1 and out.count("fit test_resnet") == 1  # process 0 speaks, once


def test_one_metrics_csv_with_one_row_per_epoch(runs: dict) -> None:
    two = runs["two"]
    assert [int(r["epoch"]) for r in _rows(two)] == [0, 1, 2]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(two.glob("**/*.tmp*"))


def test_validation_is_reduced_over_both_processes(runs: dict) -> None:
    # the last epoch's logged val figures must be those of the whole val split: each process scored half of it
    two = runs["two"]
    last = _rows(two)[-1]
    _ = subprocess.run([*RUN, "evaluate", str(two), "--split", "val", "--checkpoint", "last", "--tta", "none",
                        "--no-baseline"], env=_env(), capture_output=True, text=True, timeout=300, check=True)
    metrics = json.loads((two / "metrics.json").read_text())
    for rank, figures in metrics["ranks"].items():
        assert float(last[f"val/{rank}/top1"]) == pytest.approx(figures["top1"], abs=1e-6), rank


def test_val_figures_of_two_processes_are_within_noise_of_one(runs: dict) -> None:
    # two processes of batch B take the steps of one process of batch 2B: same global batch, same schedule. Their
    # val figures differ only by the order of the records and batch norm's per-process statistics
    one, two = _rows(runs["one_global"]), _rows(runs["two"])
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert float(b["val/loss"]) == pytest.approx(float(a["val/loss"]), rel=0.15)
    assert float(two[-1]["val/loss"]) < float(two[0]["val/loss"])  # it learns


def test_killed_two_process_run_resumes_to_the_same_epoch_count(plankton_store: Path, batch: int,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "killed"
    args = [*_args(plankton_store, run, epochs=4), f"data.batch_size={batch}", *DDP]
    proc = subprocess.Popen([*RUN, *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # both processes, as a cluster's scheduler would
    proc.wait(timeout=60)
    assert alive and last.is_file(), "the run ended (or never checkpointed) before it could be killed"
    assert len(_rows(run)) < 4
    out = _fit(["fit", "--resume", "auto", *args[1:]]).stdout
    assert "resuming from" in out
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    n = len(Store(plankton_store).splits["train"])
    assert int(rows[-1]["step"]) == _steps(-(-n // 2), batch) * 4


def test_gradnorm_mixing_stages_and_balanced_sampling_train_under_ddp(plankton_store: Path, tmp_path: Path) -> None:
    # the training features with state or per-batch logic of their own, together in one 2-process run
    run = tmp_path / "all"
    args = [*_args(plankton_store, run, epochs=2), "data.batch_size=16", *DDP, "loss.weighting=gradnorm",
            "loss.smoothing=taxonomic", "mix.mixup_alpha=0.4", "mix.within=group", "progressive.num_stages=2",
            "progressive.start_size=24", "data.sampler=balanced"]
    out = _fit(args).stdout
    assert "progressive stages: epochs 1-1 at 24px" in out
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1] and [r["image_size"] for r in rows] == ["24", "32"]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = state["gradnorm.weights"]
    assert not torch.allclose(weights, torch.ones_like(weights))  # GradNorm moved its weights
    assert float(weights.sum()) == pytest.approx(len(weights), rel=1e-4)


def test_sync_batchnorm_on_the_cpu_is_one_line(plankton_store: Path, tmp_path: Path) -> None:
    done = subprocess.run([*RUN, *_args(plankton_store, tmp_path / "sbn"), *DDP, "trainer.sync_batchnorm=true"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "trainer.sync_batchnorm needs GPUs" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "sbn" / "checkpoints").exists()


def test_embedding_task_with_sampled_centres_trains_under_ddp(plankton_store: Path, tmp_path: Path) -> None:
    # margin heads whose centres each process samples on its own: DDP still averages one dense centre gradient
    run = tmp_path / "emb"
    out = _fit([*_args(plankton_store, run, epochs=2), "data.batch_size=16", *DDP, "task=embedding",
                "loss.margin=arcface", "loss.sample_rate=0.5", "model.embed_dim=32"]).stdout
    assert out.count("fit done") == 1
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1] and float(rows[1]["train/loss"]) < float(rows[0]["train/loss"])
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    groups = state["optimizer_states"][0]["param_groups"]
    assert groups[-1]["lr"] == pytest.approx(10 * groups[0]["lr"])  # the centres' own group, under DDP too


def test_shards_are_disjoint_halves_and_a_resume_skips_the_same_records_in_any_world_size() -> None:
    from taxotrain.training.datamodule import EpochShuffleSampler
    from taxotrain.training.interrupt import ResumableLoader, ResumePoint

    n, batch = 23, 3
    order = list(EpochShuffleSampler(n, seed=5))
    shards = [list(EpochShuffleSampler(n, seed=5, rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 12  # padded by one record: both processes take the same steps
    assert set(shards[0]) | set(shards[1]) == set(range(n)) and len(set(shards[0]) & set(shards[1])) <= 1
    # two processes stopped after 2 batches each; resumed with one process, it skips exactly what they trained
    trained = {i for shard in shards for i in shard[: 2 * batch]}
    point = ResumePoint(skip_records=2 * batch * 2)
    loader = ResumableLoader(list(range(n)), batch_size=batch, sampler=EpochShuffleSampler(n, seed=5),
                             resume_point=point)
    rest = [int(i) for b in loader for i in b]
    assert set(rest) == set(range(n)) - trained and rest == order[2 * batch * 2 :]
    # and one process stopped after 4 batches, resumed with two: each skips its share of those records
    point = ResumePoint(skip_records=4 * batch)
    resumed = [[int(i) for b in ResumableLoader(list(range(n)), batch_size=batch,
                                               sampler=EpochShuffleSampler(n, seed=5, rank=r, world=2),
                                               resume_point=ResumePoint(skip_records=point.skip_records))
                for i in b] for r in (0, 1)]
    padding = set(order[:1])  # the padded shards repeat the order's first record at their end
    assert (set(resumed[0]) | set(resumed[1])) - padding == set(order[4 * batch :])
    assert len(resumed[0]) == len(resumed[1]) == 12 - 2 * batch


def test_place_and_date_metadata_train_under_ddp(metadata_store: Path, tmp_path: Path) -> None:  # noqa: F811
    # the metadata encoder and its masking schedule in 2 processes; evaluate then scores with and without it
    run = tmp_path / "meta"
    out = _fit([*_args(metadata_store, run, epochs=2), "data.batch_size=16", *DDP,
                "model.metadata=[place, date]"]).stdout
    assert out.count("fit done") == 1 and [int(r["epoch"]) for r in _rows(run)] == [0, 1]
    _ = subprocess.run([*RUN, "evaluate", str(run), "--tta", "none", "--no-retrieval"], env=_env(),
                       capture_output=True, text=True, timeout=300, check=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"all", "none", "place_masked", "date_masked"} <= set(metrics["metadata"])
