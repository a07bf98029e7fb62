"""evaluate's retrieval, held-out (few-shot) and open-set figures on real plankton: what metrics.json holds equals the
library's functions on the run's embeddings, and the report shows it; --no-retrieval skips it; classifiers get it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taxotrain.cli import main
from taxotrain.data.store import Store
from taxotrain.evaluation.retrieval import (
    fewshot_accuracy,
    known_vs_unknown_auroc,
    leave_one_out_precision_at_1,
    precision_at_1_by_group,
    retrieval_report,
)
from taxotrain.inference.embed import embed_split
from taxotrain.inference.openset import choose_threshold
from taxotrain.inference.search import l2_normalize, search
from taxotrain.run import load_run


def _labels(labels: np.ndarray, ranks: list[str]) -> dict[str, np.ndarray]:
    return {rank: labels[:, r] for r, rank in enumerate(ranks)}


@pytest.fixture(scope="module")
def embedded(embedding_run: Path, heldout_store: Path) -> dict:
    """The run, its ranks and the embeddings and labels of each split, computed directly with the library."""
    run, store = load_run(embedding_run), Store(heldout_store)
    splits = {name: embed_split(run, store, name)[:2] for name in ("train", "val", "test", "heldout")}
    return {"run": run, "store": store, "ranks": run.taxonomy.ranks, **splits}


@pytest.fixture(scope="module")
def evaluated(embedding_run: Path) -> dict:
    assert main(["evaluate", str(embedding_run), "--tta", "none", "--knn-k", "7"]) == 0
    return json.loads((embedding_run / "metrics.json").read_text())


def test_retrieval_equals_the_library_on_the_runs_embeddings(evaluated: dict, embedded: dict) -> None:
    run, store, ranks = embedded["run"], embedded["store"], embedded["ranks"]
    (g, g_lab), (q, q_lab) = embedded["train"], embedded["test"]
    expected = retrieval_report(q, _labels(q_lab, ranks), g, _labels(g_lab, ranks), k_knn=7)
    for rank in ranks:
        got = evaluated["retrieval"][rank]
        assert {"precision_at_1", "recall_at_5", "map_at_r", "knn_top1", "queries"} <= set(got)
        assert got == pytest.approx(expected[rank])
        if got["queries"]:
            assert all(0 <= got[k] <= 1 for k in ("precision_at_1", "recall_at_5", "map_at_r", "knn_top1"))
    assert evaluated["retrieval"]["class"]["queries"] == len(store.splits["test"])
    assert evaluated["retrieval"]["class"]["precision_at_1"] > 0.5  # 4 trained classes: chance is about 0.3
    _, idx = search(l2_normalize(q), l2_normalize(g), 1)
    by_group = precision_at_1_by_group(idx, _labels(q_lab, ranks), _labels(g_lab, ranks), run.taxonomy.names[0])
    assert list(evaluated["retrieval_by_group"]) == list(by_group) == ["crustaceans", "diatoms", "protists"]
    assert all(evaluated["retrieval_by_group"][group] == pytest.approx(row) for group, row in by_group.items())
    assert evaluated["retrieval_setup"]["knn_k"] == 7 and evaluated["retrieval_setup"]["gallery_records"] == len(g)


def test_heldout_classes_get_fewshot_and_openset_figures(evaluated: dict, embedded: dict) -> None:
    run, store, ranks = embedded["run"], embedded["store"], embedded["ranks"]
    (g, g_lab), (h, h_lab) = embedded["train"], embedded["heldout"]
    loo = leave_one_out_precision_at_1(h, _labels(h_lab, ranks))
    for r, rank in enumerate(ranks):
        got = evaluated["heldout"][rank]
        assert got["loo_precision_at_1"] == pytest.approx(loo[rank]["precision_at_1"])
        for shots in (1, 5):
            want = fewshot_accuracy(g.astype(np.float64).mean(0), h, h_lab[:, r], shots, draws=5,
                                    seed=run.config.run.seed)["accuracy"]
            assert got[f"fewshot_{shots}"] == pytest.approx(want)
    fine = evaluated["heldout"]["class"]
    assert fine["records"] == len(store.splits["heldout"]) and fine["classes"] == 2
    assert 0.5 < fine["loo_precision_at_1"] <= 1 and 0 <= fine["fewshot_1"] <= 1 and 0 <= fine["fewshot_5"] <= 1

    opened = evaluated["openset"]
    gallery = l2_normalize(g)
    known, _ = search(l2_normalize(embedded["test"][0]), gallery, 1)
    unknown, _ = search(l2_normalize(h), gallery, 1)
    assert opened["auroc"] == pytest.approx(known_vs_unknown_auroc(known[:, 0], unknown[:, 0]))
    assert opened["auroc"] > 0.6  # new species sit further from the train split than known ones
    v, v_lab = embedded["val"]
    v_sims, v_idx = search(l2_normalize(v), gallery, 1)
    choice = choose_threshold(v_sims[:, 0], g_lab[v_idx[:, 0], -1] == v_lab[:, -1], 0.9)
    assert opened["threshold"] == pytest.approx(choice.threshold) and opened["chosen_on"] == "val"
    assert opened["unknown_rejected"] == pytest.approx(float((unknown[:, 0] < choice.threshold).mean()))
    assert 0 <= opened["accuracy"] <= 1 and opened["unknown"] == len(h) and opened["known"] == len(known)


def test_the_report_shows_retrieval_and_the_heldout_classes(evaluated: dict, embedding_run: Path) -> None:
    html = (embedding_run / "report.html").read_text()
    assert 'id="retrieval"' in html and "MAP@R" in html and "Held-out classes" in html and "AUROC" in html
    assert f"{evaluated['retrieval']['class']['map_at_r']:.3f}" in html


def test_no_retrieval_skips_it_and_a_classifier_run_gets_it(trained_run: Path, plankton_store: Path) -> None:
    assert main(["evaluate", str(trained_run), "--tta", "none", "--no-retrieval"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert "retrieval" not in metrics and 'id="retrieval"' not in (trained_run / "report.html").read_text()
    assert main(["evaluate", str(trained_run), "--tta", "none", "--split", "val"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    got = metrics["retrieval"]["class"]
    assert got["queries"] == len(Store(plankton_store).splits["val"]) and 0 <= got["map_at_r"] <= 1
    assert "heldout" not in metrics and "openset" not in metrics  # a store without held-out classes
    assert metrics["retrieval_setup"]["embedding_dim"] == load_run(trained_run).model.num_features


def test_the_raw_pixel_floor_is_a_nearest_class_mean_and_few_shot_on_the_input_pixels(evaluated: dict,
                                                                                     embedded: dict,
                                                                                     embedding_run: Path) -> None:
    from sklearn.neighbors import NearestCentroid
    from torch.utils.data import DataLoader

    run, store, ranks = embedded["run"], embedded["store"], embedded["ranks"]

    def pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
        batches = list(DataLoader(run.task.inference_dataset(store, split), batch_size=64))
        x = np.concatenate([b["input"].reshape(len(b["input"]), -1).numpy() for b in batches]) / 255.0
        return x, np.concatenate([b["target"].numpy() for b in batches])

    floor = evaluated["baseline"]["pixel_centroid"]
    (xt, yt), (xq, yq), (xh, yh) = pixels("train"), pixels("test"), pixels("heldout")
    assert floor["train_records"] == len(xt) and floor["dim"] == xt.shape[1] == 32 * 32 * run.task.spec.channels
    for r, rank in enumerate(ranks):
        train, test = yt[:, r] >= 0, yq[:, r] >= 0  # records unknown at a rank are neither class means nor scored
        expected = NearestCentroid().fit(xt[train], yt[train, r]).predict(xq[test])
        assert floor[rank]["top1"] == pytest.approx(float((expected == yq[test, r]).mean()))
        assert floor[rank]["records"] == int(test.sum())
        for shots in (1, 5):
            want = fewshot_accuracy(xt.mean(0), xh, yh[:, r], shots, draws=5, seed=run.config.run.seed)
            assert floor["heldout"][rank][f"fewshot_{shots}"] == pytest.approx(want["accuracy"])
    html = (embedding_run / "report.html").read_text()
    assert "raw pixels (floor)" in html and "nearest class mean of the train split" in html


def test_a_heldout_floor_too_large_for_memory_is_skipped_with_the_reason(evaluated: dict, embedded: dict,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from taxotrain.evaluation import page, pixel_baseline

    run, store = embedded["run"], embedded["store"]
    monkeypatch.setattr(pixel_baseline, "HELDOUT_MAX_BYTES", 1024)
    floor = pixel_baseline.pixel_centroid_baseline(run.task, store, "test", run.config.run.seed, 64, 0)
    held = len(store.splits["heldout"])
    assert "heldout" not in floor and floor["heldout_skipped"].startswith(f"the {held} held-out records of")
    assert floor["class"]["top1"] == pytest.approx(evaluated["baseline"]["pixel_centroid"]["class"]["top1"])
    html = page._retrieval_html({**evaluated, "baseline": {"pixel_centroid": floor}}, list(embedded["ranks"]))
    assert "raw pixels (floor)</td><td colspan=\"5\">not computed: the" in html


def test_test_time_views_embed_gallery_and_queries_alike(embedded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from taxotrain.data.images import tta_views
    from taxotrain.evaluation import embedding_eval

    run, store, ranks = embedded["run"], embedded["store"], embedded["ranks"]
    asked: dict[str, str] = {}

    def recording(run_: object, store_: object, split: str, *args: object) -> tuple:
        asked[split] = args[2]  # (batch_size, workers, tta)
        return embed_split(run_, store_, split, *args)

    monkeypatch.setattr(embedding_eval, "embed_split", recording)
    figures, hits = embedding_eval.evaluate_embeddings(run, store, "test", knn_k=7, tta="flip")
    assert asked == dict.fromkeys(("train", "test", "heldout", "val"), "flip")  # every embedding, the same views
    (g, g_lab, _), (q, q_lab, _) = (embed_split(run, store, s, tta="flip") for s in ("train", "test"))
    assert not np.allclose(g, embedded["train"][0])  # the views changed the embeddings
    with torch.no_grad():  # a record's embedding is the mean of its views' embeddings
        x = next(iter(torch.utils.data.DataLoader(run.task.inference_dataset(store, "test"), batch_size=4)))["input"]
        module = run.task.inference_module(run.model.eval())
        views = [run.task.embed_step(module, {"input": v}) for v in tta_views(x, "flip")]
    assert len(views) == 2 and q[:4] == pytest.approx(np.mean(views, axis=0), abs=1e-5)
    expected = retrieval_report(l2_normalize(q), _labels(q_lab, ranks), l2_normalize(g), _labels(g_lab, ranks),
                                k_knn=7)
    assert figures["retrieval_setup"]["tta"] == "flip"
    for rank in ranks:
        assert figures["retrieval"][rank] == pytest.approx(expected[rank])
        assert float(np.nanmean(hits[rank])) == pytest.approx(expected[rank]["precision_at_1"])


def test_evaluate_passes_its_views_to_retrieval_and_the_report_says_so(embedding_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"  # a copy: the module's other tests read the files of the run evaluated with --tta none
    shutil.copytree(embedding_run, run, ignore=shutil.ignore_patterns("mlruns", "tensorboard", "*.png"))
    assert main(["evaluate", str(run), "--tta", "flip", "--no-baseline"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["tta"] == metrics["retrieval_setup"]["tta"] == "flip"
    assert "the mean of its flip test-time views, gallery and queries alike" in (run / "report.html").read_text()


def test_the_train_split_is_indexed_once_for_every_search_against_it(embedded: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from taxotrain.evaluation import embedding_eval, retrieval
    from taxotrain.inference import search as search_module

    built, real = [], search_module.build_index

    def counting(gallery: np.ndarray, *args: object, **kwargs: object) -> object:
        built.append(len(gallery))
        return real(gallery, *args, **kwargs)

    for module in (search_module, retrieval, embedding_eval):
        monkeypatch.setattr(module, "build_index", counting)
    store = embedded["store"]
    figures, _ = embedding_eval.evaluate_embeddings(embedded["run"], store, "test", knn_k=7, index="ivf")
    assert figures["retrieval_setup"]["index"] == "ivf" and "openset" in figures  # every search ran
    assert built.count(len(store.splits["train"])) == 1, built


def test_the_predictions_file_keeps_each_querys_precision_at_1(evaluated: dict, embedding_run: Path) -> None:
    with np.load(embedding_run / "predictions_test.npz") as z:
        for rank, got in evaluated["retrieval"].items():
            hits = z[f"retrieval_{rank}"]
            assert len(hits) == len(z["indices"]) and int((~np.isnan(hits)).sum()) == got["queries"]
            assert float(np.nanmean(hits)) == pytest.approx(got["precision_at_1"])


def test_knn_k_below_one_is_a_one_line_error(embedding_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(embedding_run), "--knn-k", "0"]) == 2
    assert "--knn-k 0" in capsys.readouterr().err


def test_the_margin_table_tool_reads_evaluated_runs(evaluated: dict, embedding_run: Path, heldout_store: Path,
                                                    tmp_path: Path) -> None:
    import importlib.util

    from tests.conftest import FAST

    tool = Path(__file__).resolve().parents[2] / "tools" / "margin_table.py"
    spec = importlib.util.spec_from_file_location("margin_table", tool)
    margin_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(margin_table)
    ce = tmp_path / "ce"
    assert main(["fit", f"data.store={heldout_store}", f"run.dir={ce}", "trainer.max_epochs=2",
                 "trainer.progress=none", *FAST]) == 0
    assert main(["evaluate", str(ce), "--tta", "none"]) == 0
    ce_metrics = json.loads((ce / "metrics.json").read_text())
    text = margin_table.table([ce], [embedding_run], "ArcFace")
    closed_set = text.split("\n\n")[0]  # the first table; the held-out one follows
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in closed_set.splitlines()}
    assert rows["class"][1] == f"{ce_metrics['ranks']['class']['top1']:.3f}"
    assert rows["class"][3] == f"{evaluated['retrieval']['class']['precision_at_1']:.3f}"
    assert rows["class"][6] == f"{ce_metrics['baseline']['pixel_centroid']['class']['top1']:.3f}"
    observed = evaluated["retrieval"]["class"]["precision_at_1"] - ce_metrics["ranks"]["class"]["top1"]
    assert rows["class"][7].strip("*").startswith(f"{observed:+.3f} [")
    assert "ArcFace 5-shot" in text and "Open set" in text
    held = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.split("\n\n")[1].splitlines()}
    assert held["class"][8] == f"{ce_metrics['heldout']['class']['fewshot_5']:.3f}"
    assert held["class"][9] == f"{evaluated['heldout']['class']['fewshot_5']:.3f}"
