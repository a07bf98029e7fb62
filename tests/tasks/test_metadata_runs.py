"""Image runs with place/date metadata (model.metadata): fit and evaluate on real plankton images whose generated
places and dates follow the class, the figures with metadata masked, the masking schedule in training, manifest
CSVs to predict and the one-line refusals of a layout other than the model's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from taxotrain.cli import main
from taxotrain.config import load_config
from taxotrain.data.store import Store
from taxotrain.errors import TaxotrainError
from taxotrain.run import load_run, torch_threads
from taxotrain.tasks import create_task


@pytest.fixture(scope="module")
def evaluated(metadata_run: Path) -> dict:
    assert main(["evaluate", str(metadata_run), "--tta", "none", "--no-retrieval"]) == 0
    return json.loads((metadata_run / "metrics.json").read_text())


def test_evaluate_reports_the_figures_with_all_none_and_each_component_masked(evaluated: dict,
                                                                               metadata_run: Path) -> None:
    figures = evaluated["metadata"]
    assert list(figures) == ["all", "none", "place_masked", "date_masked"]
    ranks = ["group", "subgroup", "class"]
    assert all(list(v) == ranks and all(v[r]["top1"] is not None for r in ranks) for v in figures.values())
    assert all(figures["all"][r]["top1"] == evaluated["ranks"][r]["top1"] for r in ranks)
    # each class has its own region and season: the metadata carries the class, and hiding it costs accuracy
    top1 = {name: v["class"]["top1"] for name, v in figures.items()}
    assert top1["all"] > top1["none"] + 0.15, top1
    assert top1["place_masked"] != top1["all"] and top1["date_masked"] != top1["all"], top1
    html = (metadata_run / "report.html").read_text()
    assert 'id="metadata"' in html and "all but place" in html


def test_the_checkpoint_holds_the_encoder_spec(metadata_run: Path) -> None:
    run = load_run(metadata_run)
    spec = json.loads(run.task.spec.metadata)
    assert [(c["name"], c["inputs"]) for c in spec["components"]] == [("place", ["lat", "lon"]),
                                                                       ("date", ["day_of_year"])]
    assert run.model.input_names == ("input", "meta") and "metadata: place (lat, lon)" in run.task.describe_input()


def test_masking_follows_the_schedule_in_training_steps(metadata_store: Path) -> None:
    with torch_threads(1):  # a tiny model: one thread is fastest on a CPU other jobs share
        _masking_follows_the_schedule(Store(metadata_store))


def _masking_follows_the_schedule(store: Store) -> None:
    metadata_store = store.path
    cfg = load_config(None, [f"data.store={metadata_store}", "model.backbone=test_resnet", "data.image_size=32",
                             "model.metadata=[place, date]", "model.metadata_masking.partial=0"])
    task = create_task(cfg, store=store)
    model = task.build_model(pretrained=False).train()
    batch = default_collate([task.dataset(store, "train")[i] for i in range(32)])
    given = torch.isfinite(batch["meta"])
    assert batch["meta"].shape == (32, 3) and given.any() and not given.all()  # real gaps (one record in ten)
    task.set_progress(0.0, 0)  # start: every record's metadata hidden (start = 1)
    assert torch.isnan(task.mask_training_metadata(batch)["meta"]).all()
    assert task.training_step(model, batch).parts["metadata/missing"] == 1.0
    task.set_progress(0.9, 50)  # after the ramp: hidden with probability end = 0.05, seeded by the step
    late = task.mask_training_metadata(batch)["meta"]
    assert torch.equal(torch.isfinite(late), torch.isfinite(task.mask_training_metadata(batch)["meta"]))
    kept = torch.isfinite(late).any(1)
    assert kept.sum() >= given.any(1).sum() - 6 and torch.equal(late[kept].nan_to_num(), batch["meta"][kept]
                                                                  .nan_to_num())
    part = task.training_step(model, batch).parts["metadata/missing"]
    assert 0 < part < 0.5  # the records without any metadata, and the few hidden


def test_a_store_without_the_components_asked_for_is_one_line_at_fit_start(metadata_store: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", f"data.store={metadata_store}", f"run.dir={tmp_path / 'r'}", "model.backbone=test_resnet",
                 "model.metadata=[place, elevation]", "data.image_size=32", "logging.mlflow=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "has metadata: place, date, year, hour (no elevation)" in err, err
    cfg = load_config(None, [f"data.store={metadata_store}", "model.metadata_fusion=film"])  # and no model.metadata
    with pytest.raises(TaxotrainError, match="'model.metadata_fusion' does nothing without place/date metadata"):
        create_task(cfg, store=Store(metadata_store))


def test_a_layout_other_than_the_models_is_refused(metadata_run: Path, metadata_store: Path, metadata_manifest: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = load_run(metadata_run)
    # evaluate's datasets: a model that takes elevation on a store that has none
    spec = json.loads(run.task.spec.metadata)
    spec["components"].append({"name": "elevation", "encoder": "elevation", "inputs": ["elevation"],
                               "options": {"scales": [100.0], "linear_scale": None}, "out_dim": 2})
    from dataclasses import replace

    other = create_task(run.config, taxonomy=run.taxonomy, spec=replace(run.task.spec, metadata=json.dumps(spec)))
    with pytest.raises(TaxotrainError, match=r"takes place, date, elevation but .* \(no elevation\)"):
        other.inference_dataset(Store(metadata_store), "test")
    # predict: a manifest without a date column
    with metadata_manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:4]
    no_date = tmp_path / "no_date.csv"
    with no_date.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filepath", "decimalLatitude", "decimalLongitude"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert main(["predict", str(metadata_run), str(no_date), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks date" in err and "eventDate" in err, err
    # export: a bundle takes the image alone
    assert main(["export", str(metadata_run), "--out", str(tmp_path / "bundle")]) == 2
    assert "place/date metadata" in capsys.readouterr().err


def _scores(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def test_predict_reads_metadata_from_a_manifest_and_masks_files_given_alone(
        metadata_run: Path, metadata_manifest: Path, tmp_path: Path) -> None:
    import shutil

    with metadata_manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["decimalLatitude"] and r["eventDate"]][::10]
    (tmp_path / "imgs").mkdir()
    for r in rows:
        shutil.copy(r["filepath"], tmp_path / "imgs")
        r["filepath"] = f"imgs/{Path(r['filepath']).name}"  # relative to the CSV, as prepare --manifest reads it
    table = tmp_path / "to_predict.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filepath", "decimalLatitude", "decimalLongitude", "eventDate"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with_meta, alone = tmp_path / "with.csv", tmp_path / "alone.csv"
    assert main(["predict", str(metadata_run), str(table), "--out", str(with_meta), "--tta", "none"]) == 0
    assert main(["predict", str(metadata_run), str(tmp_path / "imgs"), "--out", str(alone), "--tta", "none"]) == 0
    a, b = _scores(with_meta), _scores(alone)
    truth = {str(tmp_path / r["filepath"]): r["class"] for r in rows}
    assert set(a) == set(b) == set(truth)
    assert sum(a[p]["class"] == c for p, c in truth.items()) > sum(b[p]["class"] == c for p, c in truth.items())
    assert all(a[p]["class_top1_score"] != b[p]["class_top1_score"] for p in truth)


def test_predict_with_a_prior_multiplies_it_in(metadata_run: Path, prior_run: Path, metadata_manifest: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = {}
    for name, extra in (("none", []), ("prior", ["--prior", str(prior_run)]),
                        ("zero", ["--prior", str(prior_run), "--prior-weight", "0"])):
        outs[name] = tmp_path / f"{name}.csv"
        assert main(["predict", str(metadata_run), str(metadata_manifest), "--out", str(outs[name]), "--tta", "none",
                     *extra]) == 0
        said = capsys.readouterr().out
        assert ("prior " in said) == bool(extra) and ("class 6/6 classes" in said) == bool(extra)
    none, prior, zero = (_scores(outs[k]) for k in ("none", "prior", "zero"))
    assert zero == none  # weight 0: the prior changes nothing
    with metadata_manifest.open(newline="") as fh:
        truth = {r["filepath"]: r["class"] for r in csv.DictReader(fh)}
    right = {k: np.mean([rows[p]["class"] == c for p, c in truth.items()]) for k, rows in (("none", none),
                                                                                          ("prior", prior))}
    assert right["prior"] > right["none"], right
    assert any(prior[p]["class_score"] != none[p]["class_score"] for p in truth)
    # a manifest without the prior's columns cannot feed it
    bare = tmp_path / "bare.csv"
    bare.write_text("filepath\n" + next(iter(truth)) + "\n")
    assert main(["predict", str(metadata_run), str(bare), "--out", str(tmp_path / "x.csv"), "--prior",
                 str(prior_run)]) == 2


def _with_metadata(store: Path, out: Path) -> Path:
    """A copy of ``store`` with a place per record (a signal store: prepare writes none for series yet)."""
    import shutil

    import h5py

    from taxotrain.data.metadata import MetadataLayout

    shutil.copy(store, out)
    n = len(Store(out))
    rng = np.random.default_rng(0)
    with h5py.File(out, "a") as f:
        group = f.create_group("metadata")
        group.attrs["layout"] = MetadataLayout(("place",)).to_json()
        group.create_dataset("lat", data=rng.uniform(-60, 60, n).astype(np.float32))
        group.create_dataset("lon", data=rng.uniform(-180, 180, n).astype(np.float32))
        group.create_dataset("place_valid", data=np.ones(n, dtype=bool))
    return out


@pytest.mark.parametrize("name", ["embedding", "signal"])
def test_the_embedding_objective_and_signal_inputs_take_metadata(name: str, metadata_store: Path, gunpoint_store: Path,
                                                                 tmp_path: Path) -> None:
    if name == "signal":
        path, small = _with_metadata(gunpoint_store, tmp_path / "gunpoint.h5"), ["model.kwargs={width: 8}"]
    else:
        path, small = metadata_store, ["model.backbone=test_resnet", "data.image_size=32", "model.embed_dim=16"]
    cfg = load_config(None, [f"task={name}", f"data.store={path}", "model.metadata=[place]",
                             "model.metadata_fusion=film", *small])
    store = Store(path)
    with torch_threads(1):
        task = create_task(cfg, store=store)
        model = task.build_model(pretrained=False)
        batch = default_collate([task.dataset(store, "train")[i] for i in range(8)])
        assert batch["meta"].shape == (8, 2) and model.input_names == ("input", "meta")
        task.set_progress(1.0, 0)
        task.training_step(model.train(), batch).loss.backward()
        raw = default_collate([task.inference_dataset(store, "test")[i] for i in range(4)])
        module = task.inference_module(model.eval())
        given = task.predict_step(module, {"input": raw["input"], "meta": raw["meta"]}, "none")
        hidden = task.predict_step(module, task.hide_metadata({"input": raw["input"], "meta": raw["meta"]},
                                                              ["place"]), "none")
        missing = task.predict_step(module, {"input": raw["input"]}, "none")  # no meta at all: missing
    finest = task.taxonomy.finest
    assert np.allclose(hidden[finest], missing[finest])
    assert set(given) == set(task.taxonomy.ranks)
