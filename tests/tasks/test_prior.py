"""task: prior: a place/date prior on the real cetacean archive beats the class-frequency baseline; it predicts CSV
rows; its presence-only loss; and the late fusion of predict --prior on a hand-made case."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from taxotrain.cli import main
from taxotrain.config import ConfigError, load_config
from taxotrain.data.store import Store
from taxotrain.inference.prior import fuse_probabilities, match_classes
from taxotrain.run import torch_threads
from taxotrain.tasks import create_task
from taxotrain.tasks.prior_objective import background_points, presence_loss
from taxotrain.taxonomy import Taxonomy
from tests.tasks.conftest import PRIOR_FAST


@pytest.fixture(scope="module")
def cetacean_prior(cetacean_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "cetaceans"
    assert main(["fit", f"data.store={cetacean_store}", f"run.dir={run}", "trainer.max_epochs=20",
                 "data.batch_size=128", "optim.lr=3e-3", *PRIOR_FAST]) == 0
    assert main(["evaluate", str(run)]) == 0
    return run, json.loads((run / "metrics.json").read_text())


def test_the_cetacean_prior_beats_the_class_frequency(cetacean_prior: tuple[Path, dict]) -> None:
    run, metrics = cetacean_prior
    ranks = ["family", "genus", "scientificName"]
    frequency = metrics["baseline"]["frequency"]
    assert list(frequency) == ranks and all(set(frequency[r]) == {"top1", "top5"} for r in ranks)
    assert all(set(metrics["ranks"][r]) >= {"top1", "top5"} for r in ranks)
    # 221 test records; about half are the commonest species (frequency top-1 0.49): where and when say more
    fine, base = metrics["ranks"]["scientificName"]["top1"], frequency["scientificName"]["top1"]
    assert base == pytest.approx(0.490, abs=0.01)
    assert fine > base + 0.08, (fine, base)
    assert metrics["ranks"]["scientificName"]["top5"] > frequency["scientificName"]["top5"]
    # with its metadata hidden the prior falls back to the frequencies it learnt from masked records
    assert list(metrics["metadata"]) == ["all", "none", "place_masked", "date_masked"]
    assert metrics["metadata"]["none"]["scientificName"]["top1"] < fine
    assert "class frequency" in (run / "report.html").read_text()


def test_a_prior_predicts_csv_rows_of_places_and_dates(cetacean_prior: tuple[Path, dict], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = cetacean_prior
    rows = tmp_path / "sightings.csv"
    rows.write_text("occurrenceID,decimalLatitude,decimalLongitude,eventDate\n"
                    "a,-33.9,151.3,2001-07-14\nb,-42.1,147.9,1999-01\nc,,,\nd,95,10,2001-02-30\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(rows), "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["id"] for r in got] == ["a", "b", "c", "d"] and all(r["scientificName"] and not r["error"] for r in got)
    assert got[2]["scientificName_score"] == got[3]["scientificName_score"]  # unusable values count as missing
    no_date = tmp_path / "places.csv"
    no_date.write_text("decimalLatitude,decimalLongitude\n-33.9,151.3\n")
    assert main(["predict", str(run), str(no_date), "--out", str(out)]) == 2
    assert "lacks date" in capsys.readouterr().err


def test_predict_prior_is_the_product_rule_on_a_hand_made_case() -> None:
    model = Taxonomy.from_rows(["genus", "species"], [("A", "a1"), ("A", "a2"), ("B", "b1")])
    prior = Taxonomy.from_rows(["genus", "species", "subspecies"], [("B", "b1", "x"), ("A", "a1", "y")])
    columns = match_classes(model, prior)
    assert set(columns) == {"genus", "species"}  # matched by rank name, then class name
    species = columns["species"]
    assert [prior.names[1][i] if i >= 0 else None for i in species] == [model.names[1][0], None, model.names[1][2]]
    a1, a2, b1 = (model.names[1].index(n) for n in ("a1", "a2", "b1"))
    probs = {"genus": np.array([[0.5, 0.5]]), "species": np.zeros((1, 3))}
    probs["species"][0, [a1, a2, b1]] = [0.2, 0.3, 0.5]
    q = {"genus": np.array([[0.9, 0.1]]), "species": np.zeros((1, 2)), "subspecies": np.array([[0.5, 0.5]])}
    q["species"][0, prior.names[1].index("a1")], q["species"][0, prior.names[1].index("b1")] = 0.8, 0.2
    fused = fuse_probabilities(probs, q, columns, weight=1.0)
    # a1: 0.2 * 0.8; a2 is not in the prior: flat, 1 / 2 (the prior's mean); b1: 0.5 * 0.2; then renormalised
    raw = {"a1": 0.2 * 0.8, "a2": 0.3 * 0.5, "b1": 0.5 * 0.2}
    total = sum(raw.values())
    assert fused["species"][0, [a1, a2, b1]] == pytest.approx([raw[k] / total for k in ("a1", "a2", "b1")])
    genus_a = model.names[0].index("A")
    g = np.array([0.5 * 0.9, 0.5 * 0.1]) if prior.names[0].index("A") == 0 else np.array([0.5 * 0.1, 0.5 * 0.9])
    assert fused["genus"][0, genus_a] == pytest.approx(g[0] / g.sum())
    half = fuse_probabilities(probs, q, columns, weight=0.5)["species"][0, [a1, a2, b1]]
    root = [0.2 * math.sqrt(0.8), 0.3 * math.sqrt(0.5), 0.5 * math.sqrt(0.2)]
    assert half == pytest.approx(np.array(root) / sum(root))
    assert fuse_probabilities(probs, q, {}, 1.0)["species"] is probs["species"]  # no shared rank: left alone
    kept = fuse_probabilities(probs, q, columns, 1.0, use=np.array([False]))  # a record without metadata
    assert kept["species"] == pytest.approx(probs["species"])


def test_the_presence_loss_and_its_background_points() -> None:
    z = torch.tensor([[2.0, -1.0, 0.5]])
    y = torch.tensor([0])
    bg = torch.tensor([[0.0, 1.0, -2.0]])
    sp = torch.nn.functional.softplus
    observed = (sp(z[0, 1]) + sp(z[0, 2]) + 3 * sp(-z[0, 0])) / 3  # SINR's positive weight = the class count
    assert presence_loss(z, y, bg, 0.5) == pytest.approx(float(observed + 0.5 * sp(bg).mean()))
    assert presence_loss(z, torch.tensor([-1]), bg, 2.0) == pytest.approx(float(2 * sp(bg).mean()))
    points = background_points(20_000, [("place", ("lat", "lon")), ("date", ("day_of_year",)),
                                        ("elevation", ("elevation",))], torch.Generator().manual_seed(0))
    lat, lon, day, elevation = points.unbind(1)
    # uniform on the sphere: as many points above 30 degrees north as the cap's share of the area (1 - sin 30) / 2
    assert float((lat > 30).float().mean()) == pytest.approx(0.25, abs=0.01)
    assert lon.min() >= -180 and lon.max() <= 180 and day.min() >= 1 and day.max() < 366.25
    assert torch.isnan(elevation).all()


def test_a_presence_only_prior_trains_and_gives_normalised_scores(cetacean_store: Path) -> None:
    store = Store(cetacean_store)
    cfg = load_config(None, ["task=prior", f"data.store={cetacean_store}", "loss.prior_background=1",
                             "model.metadata_hidden=32"])
    task = create_task(cfg, store=store)
    assert task.metadata_components == ("place", "date")  # year has no encoder
    model = task.build_model(pretrained=False)
    from torch.utils.data import default_collate

    batch = default_collate([task.dataset(store, "train")[i] for i in range(64)])
    task.set_progress(1.0, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    with torch_threads(1):  # a tiny model: one thread is fastest on a CPU other jobs share
        for _ in range(20):
            loss = task.training_step(model.train(), batch).loss
            losses.append(float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert losses[-1] < losses[0]
    probs = task.predict_step(task.inference_module(model.eval()), {"input": batch["input"]})
    assert all(np.allclose(p.sum(1), 1, atol=1e-5) for p in probs.values())


@pytest.mark.parametrize(("overrides", "says"), [
    (["task=image", "loss.prior_background=1"], "applies to task: prior"),
    (["task=prior", "model.metadata_fusion=film"], "task: prior reads place/date metadata alone"),
    (["task=prior", "data.image_size=32"], "task: prior reads place/date metadata alone"),
])
def test_prior_settings_are_checked_in_one_line(overrides: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(None, overrides)


def test_a_prior_takes_the_mlp_backbone_only(cetacean_store: Path) -> None:
    cfg = load_config(None, ["task=prior", f"data.store={cetacean_store}", "model.backbone=resnet18"])
    with pytest.raises(ConfigError, match="task: prior takes mlp"):
        create_task(cfg, store=Store(cetacean_store)).build_model()
