"""Imbalanced classes: the samplers' class frequencies over many epochs (on the real plankton subset), capped class
weights, the logit-adjusted loss, post-hoc logit adjustment saved with the model, and the one-line refusals."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taxotrain.cli import main
from taxotrain.config import load_config
from taxotrain.data.prepare import prepare_images
from taxotrain.data.store import Store
from taxotrain.losses import MultiRankLoss, class_weights, log_prior
from taxotrain.run import load_run
from taxotrain.tasks import create_task
from taxotrain.training.datamodule import EpochWeightedSampler, TaskDataModule, sampling_weights
from tests.conftest import SUBSET_CLASSES, TINY, need_plankton, taxonomy_rows


@pytest.fixture(scope="module")
def long_tailed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real plankton images of the subset's classes at long-tailed counts (120 down to 4 per class)."""
    root, rows = need_plankton(), taxonomy_rows()
    manifest = tmp_path_factory.mktemp("tail") / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "group", "subgroup", "class"])
        for cls, n in zip(SUBSET_CLASSES, (120, 60, 30, 15, 8, 4), strict=True):
            for img in sorted((root / "images" / cls).glob("*.jpg"))[:n]:
                writer.writerow([str(img), rows[cls]["group"], rows[cls]["subgroup"], cls])
    out = manifest.with_name("tail.h5")
    prepare_images(None, out, ["group", "subgroup", "class"], manifest=manifest, val=0.1, test=0.1, workers=1)
    return out


def _class_shares(store_path: Path, sampler: str, epochs: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(share of draws per class over ``epochs`` epochs, train count per class) at the finest rank."""
    cfg = load_config(None, [f"data.store={store_path}", f"data.sampler={sampler}"])
    store = Store(store_path)
    dm = TaskDataModule(create_task(cfg, store=store), store)
    sampler_ = dm._train_sampler(len(store.splits["train"]))
    labels = store.labels[store.splits["train"], -1]
    drawn: Counter[int] = Counter()
    for epoch in range(epochs):
        sampler_.set_epoch(epoch)
        order = list(sampler_)
        assert len(order) == len(labels)
        drawn.update(labels[order].tolist())
    counts = np.bincount(labels, minlength=store.taxonomy.num_classes[-1])
    shares = np.array([drawn[c] for c in range(len(counts))], dtype=float) / sum(drawn.values())
    return shares, counts


def test_samplers_draw_classes_at_the_frequencies_they_promise(long_tailed_store: Path) -> None:
    shares, counts = _class_shares(long_tailed_store, "balanced", epochs=100)
    present = counts > 0
    assert present.all() and counts.max() >= 20 * counts.min()
    expected = 1.0 / present.sum()
    assert np.abs(shares[present] - expected).max() < 0.35 * expected  # every class equally often, within noise
    shares, counts = _class_shares(long_tailed_store, "sqrt", epochs=100)
    expected = np.sqrt(counts) / np.sqrt(counts).sum()
    assert np.abs(shares[present] - expected[present]).max() < 0.35 * expected[present].max()
    shares, counts = _class_shares(long_tailed_store, "shuffle", epochs=2)
    np.testing.assert_allclose(shares, counts / counts.sum())  # every record once per epoch


def test_weighted_draws_are_fixed_by_seed_and_epoch_and_resume_skips() -> None:
    weights = sampling_weights(np.array([0, 0, 0, 0, 1, 2, -1, -1]), 1.0)
    # four groups (three classes and the unknown records), each drawn a quarter of the time
    assert torch.allclose(weights, torch.tensor([0.25] * 4 + [1.0, 1.0, 0.5, 0.5], dtype=torch.float64))
    a, b = EpochWeightedSampler(weights, seed=3), EpochWeightedSampler(weights, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b)
    b.skip = 3
    assert list(b) == list(a)[3:]
    b.skip = 0
    b.set_epoch(3)
    assert list(b) != list(a)


def test_class_weights_are_inverse_frequency_averaging_one_and_capped() -> None:
    counts = np.array([100, 10, 1, 0])
    w = class_weights(counts, 1.0, cap=1e9).numpy()
    assert float((w * counts).sum() / counts.sum()) == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(10.0) and w[2] / w[0] == pytest.approx(100.0) and w[3] == 0
    capped = class_weights(counts, 1.0, cap=10.0).numpy()
    assert capped.max() == 10.0 and capped[0] == pytest.approx(w[0])
    root = class_weights(counts, 0.5, cap=1e9).numpy()
    assert root[2] / root[0] == pytest.approx(10.0)


def test_the_loss_weighs_records_by_class_and_shifts_logits_by_the_prior() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(32, 3), torch.randint(0, 3, (32,))
    counts = [np.array([50, 30, 2])]
    w = class_weights(counts[0], 1.0, 10.0)
    weighted = MultiRankLoss(["class"], class_weights=[w])({"class": logits}, y[:, None])["loss"]
    expected = (F.cross_entropy(logits, y, reduction="none") * w[y]).mean()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)
    shift = 0.7 * log_prior(counts[0])
    adjusted = MultiRankLoss(["class"], logit_shift=[shift])({"class": logits}, y[:, None])["loss"]
    assert adjusted.item() == pytest.approx(F.cross_entropy(logits + shift, y).item(), rel=1e-6)


def test_post_hoc_logit_adjustment_is_saved_with_the_model(synthetic_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "la"
    assert main(["fit", f"data.store={synthetic_store}", f"run.dir={run}", "trainer.max_epochs=1", *TINY,
                 "loss.logit_adjustment=predict", "loss.logit_adjustment_tau=0.5", "data.sampler=sqrt",
                 "loss.class_weights=sqrt_inverse"]) == 0
    store = Store(synthetic_store)
    loaded = load_run(run)
    counts = create_task(loaded.config, store=store).class_counts
    for r in range(3):  # the train prior of each rank, times tau, restored from the checkpoint
        torch.testing.assert_close(getattr(loaded.model, f"prior_offset{r}"), 0.5 * log_prior(counts[r]))
    x = torch.stack([loaded.task.dataset(store, "test")[i]["input"] for i in range(4)])
    with torch.no_grad():
        features = loaded.model.eval().forward_features(x)
        adjusted = loaded.model.forward_head(features)
        raw = loaded.model.train().forward_head(features)  # training sees the raw logits
    for r, rank in enumerate(loaded.taxonomy.ranks):
        torch.testing.assert_close(adjusted[rank], raw[rank] - 0.5 * log_prior(counts[r]))
    # a partial load (the batch-size probe restores batch-norm buffers alone) leaves the offsets as they are
    norms = {k: v for k, v in loaded.model.state_dict().items() if "running" in k}
    loaded.model.load_state_dict(norms, strict=False)
    torch.testing.assert_close(loaded.model.prior_offset0, 0.5 * log_prior(counts[0]))
    # a run trained with class weights joins an ensemble (its loss is not needed there)
    assert main(["ensemble", str(run), str(run), "--out", str(tmp_path / "ens")]) == 0


def test_imbalance_settings_that_cannot_apply_are_refused(gunpoint_store: Path, synthetic_store: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quiet = ["task=signal", "trainer.cpu_threads=1", "logging.mlflow=false", "logging.tensorboard=false"]
    for setting in ("data.sampler=balanced", "loss.class_weights=inverse", "loss.logit_adjustment=train"):
        assert main(["fit", f"data.store={gunpoint_store}", f"run.dir={tmp_path / 'r'}", *quiet,
                     "model.backbone=minirocket", setting]) == 2
        err = capsys.readouterr().err
        assert setting.split("=")[0] in err and "closed form" in err and err.count("\n") == 1
    assert main(["fit", f"data.store={synthetic_store}", f"run.dir={tmp_path / 's'}", *TINY,
                 "data.sampler=balanced", "data.sampler_rank=kingdom"]) == 2
    err = capsys.readouterr().err
    assert "data.sampler_rank" in err and "'kingdom'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "s" / "checkpoints").exists()


def test_calibrate_adds_post_hoc_logit_adjustment_to_a_finished_run(synthetic_run: Path, synthetic_store: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    assert main(["calibrate", str(run), "--no-temperature"]) == 2
    assert "--logit-adjustment" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--logit-adjustment", "-1"]) == 2
    assert "give tau >= 0" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--logit-adjustment", "1", "--no-temperature"]) == 0
    assert capsys.readouterr().out.startswith("logit adjustment: each rank's logits less 1 x log(train prior)")
    store = Store(synthetic_store)
    before, after = load_run(synthetic_run), load_run(run)
    counts = create_task(after.config, store=store).class_counts
    assert torch.equal(after.model.temperature, torch.ones(3))  # --no-temperature
    x = torch.stack([after.task.dataset(store, "test")[i]["input"] for i in range(4)])
    with torch.no_grad():
        raw, adjusted = before.model(input=x), after.model(input=x)
    for r, rank in enumerate(after.taxonomy.ranks):
        torch.testing.assert_close(adjusted[rank], raw[rank] - log_prior(counts[r]))
    assert after.metadata["calibration"]["logit_adjustment"] == 1.0
    # then the temperature on top, fitted on the adjusted logits; 0 removes the adjustment again
    assert main(["calibrate", str(run), "--logit-adjustment", "0"]) == 0
    with torch.no_grad():
        again = load_run(run)
        plain = again.model(input=x)
    for r, rank in enumerate(again.taxonomy.ranks):
        torch.testing.assert_close(plain[rank], raw[rank] / again.model.temperature[r])
