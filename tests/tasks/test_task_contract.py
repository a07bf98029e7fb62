"""The contract every registered task keeps, looped over ``list_tasks()`` (timm's style): build, a training step lowers
the loss on a fixed batch, metrics name allowed monitors, save, reload, predict the same, and read prediction inputs.

A new task only needs a small real store and some input files in ``SOURCES`` below to be held to the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from taxotrain.config import load_config
from taxotrain.data.signals import ucr_folder
from taxotrain.data.store import Store
from taxotrain.run import load_run
from taxotrain.tasks import create_task, list_tasks
from taxotrain.training.module import save_checkpoint
from tests.tasks.conftest import CETACEANS

# per task: config overrides that keep it small, and what to prepare and predict from
SMALL = {"image": ["model.backbone=test_resnet", "data.image_size=32"],
         "embedding": ["model.backbone=test_resnet", "data.image_size=32", "model.embed_dim=16"],
         "signal": ["model.kwargs={width: 8}"],
         "prior": ["model.metadata_hidden=32", "model.metadata_dim=16"]}


@pytest.fixture(scope="module")
def sources(synthetic_set: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
            gunpoint_store: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Per task: a prepared store and inputs to predict."""
    from taxotrain.data.prepare import prepare_images
    from taxotrain.data.prepare_occurrences import prepare_occurrences

    images, taxonomy = synthetic_set
    folder = tmp_path_factory.mktemp("contract")
    store = folder / "synthetic.h5"
    prepare_images(images, store, ["family", "genus", "species"], taxonomy=taxonomy, workers=1)
    found = {"image": (store, [images / "squares_red_plain"]), "embedding": (store, [images / "squares_red_plain"]),
             "signal": (gunpoint_store, [ucr_folder("GunPoint") / "GunPoint_TEST.ts"])}
    if CETACEANS.is_file():  # the real Darwin Core Archive in ../shared
        occurrences = folder / "cetaceans.h5"
        prepare_occurrences(CETACEANS, occurrences, ["family", "genus", "scientificName"])
        rows = folder / "sightings.csv"
        rows.write_text("decimalLatitude,decimalLongitude,eventDate\n-33.9,151.3,2001-07-14\n-42.1,147.9,1999-01\n,,\n")
        found["prior"] = (occurrences, [rows])
    return found


def _fixed_batch(task: object, store: Store, n: int = 16) -> dict[str, torch.Tensor]:
    ds = task.dataset(store, "train", train=False)  # type: ignore[attr-defined]
    return default_collate([ds[i] for i in range(n)])


def test_every_task_has_sources() -> None:
    assert sorted(SMALL) == list_tasks(), "add a small config and SOURCES for the new task"


@pytest.mark.parametrize("name", list_tasks())
def test_task_contract(name: str, sources: dict[str, tuple[Path, list[Path]]], tmp_path: Path) -> None:
    if name not in sources:
        pytest.skip(f"no store for task: {name} (the real cetacean archive is not at {CETACEANS})")
    store_path, inputs = sources[name]
    store = Store(store_path)
    cfg = load_config(None, [f"task={name}", f"data.store={store_path}", *SMALL[name]])
    torch.manual_seed(0)
    task = create_task(cfg, store=store)
    task.check_config()
    model = task.build_model(pretrained=False)

    # datasets give dict samples of the shape example_batch promises
    batch = _fixed_batch(task, store)
    example = task.example_batch(16)
    assert batch["input"].shape == example["input"].shape and batch["target"].shape == example["target"].shape
    assert batch["index"].tolist() == store.splits["train"][:16].tolist()

    # a few training steps lower the loss on a fixed batch; the step names its parts
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    before = task.validation_step(model, batch).loss.item()
    for _ in range(6):
        out = task.training_step(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert task.validation_step(model, batch).loss.item() < before
    assert "loss" in out.parts and all(f"{rank}/loss" in out.parts for rank in task.taxonomy.ranks)

    # validation metrics are named so that every one of them is an allowed monitor
    metrics = task.metrics()
    metrics.update(task.validation_step(model, batch).outputs, batch)
    assert {f"val/{k}" for k in metrics.compute()} | {"val/loss"} == set(task.monitors())
    assert task.default_monitor() in task.monitors()

    # save as the trainer does, reload, predict the same
    model.eval()
    save_checkpoint(task, model, tmp_path / "model.ckpt")
    run = load_run(tmp_path / "model.ckpt")
    assert run.task.name == name and run.task.spec == task.spec
    raw = default_collate([task.inference_dataset(store, "test")[i] for i in range(8)])
    assert raw["input"].shape == task.example_input(8).shape and raw["input"].dtype == task.example_input(8).dtype
    inputs_only = {"input": raw["input"]}
    mine = task.predict_step(task.inference_module(model), inputs_only, task.resolve_tta("auto"))
    theirs = run.task.predict_step(run.task.inference_module(run.model), inputs_only, run.task.resolve_tta("auto"))
    assert list(mine) == task.taxonomy.ranks and mine.keys() == theirs.keys()
    assert all(torch.allclose(torch.from_numpy(mine[k]), torch.from_numpy(theirs[k]), atol=1e-6) for k in mine)
    assert all(np.allclose(p.sum(1), 1, atol=1e-5) for p in mine.values())

    # files to predict become one record each, with the columns the task promises
    records, total = [], 0
    for input_batch in task.prediction_batches(inputs, batch_size=32, workers=0):
        outputs = task.predict_step(task.inference_module(model), {"input": input_batch.input}, "none") \
            if input_batch.input is not None else {}
        got = task.records(outputs, input_batch, None, topk=3)
        assert len(got) == len(input_batch.errors)
        records += got
        total += len(input_batch.errors)
        if total > 64:
            break
    assert records and all(not r.error for r in records)
    columns = task.prediction_columns(3)
    assert all(set(task.prediction_row(r)) <= set(columns) for r in records)


def _check(fn: Callable[[], object], match: str) -> None:
    from taxotrain.errors import TaxotrainError

    with pytest.raises(TaxotrainError, match=match):
        fn()


def test_a_task_refuses_a_store_of_another_kind(sources: dict[str, tuple[Path, list[Path]]]) -> None:
    image_store, _ = sources["image"]
    signal_store, _ = sources["signal"]
    _check(lambda: create_task(load_config(None, ["task=signal"]), store=Store(image_store)), "image store")
    _check(lambda: create_task(load_config(None, ["task=image"]), store=Store(signal_store)), "signal store")
