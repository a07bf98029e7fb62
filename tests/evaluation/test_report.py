"""evaluate on a trained run: metrics.json, per_class.csv, plots and report.html (self-contained, with the gallery of
mistakes, confused pairs, roll-up and per-class tables), figures without clipped text, and its errors."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from taxotrain.cli import main
from taxotrain.data.store import Store
from taxotrain.evaluation.metrics import confusion, reliability
from taxotrain.evaluation.plots import confusion_figure, curve_figures, recall_by_frequency_figure
from taxotrain.taxonomy import Taxonomy


def test_evaluate_writes_sane_report(trained_run: Path, plankton_store: Path) -> None:
    assert main(["evaluate", str(trained_run)]) == 0
    store = Store(plankton_store)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["split"] == "test" and metrics["evaluation"]["records"] == len(store.splits["test"])
    ev = metrics["evaluation"]  # throughput of the scoring pass: records over the seconds it took
    assert ev["records_per_s"] == pytest.approx(ev["records"] / ev["seconds"], rel=0.05) and ev["views"] == 8
    for rank in store.ranks:
        m = metrics["ranks"][rank]
        assert set(m) >= {"top1", "top5", "macro_f1", "balanced_accuracy", "ece"}
        assert all(0.0 <= m[k] <= 1.0 for k in ("top1", "top5", "macro_f1", "balanced_accuracy", "ece"))
        saved = np.load(trained_run / "predictions_test.npz")  # the ECE is the saved probabilities' own
        curve = reliability(saved[f"probs_{rank}"], saved["labels"][:, store.ranks.index(rank)])
        seen = curve["count"] > 0
        gaps = np.abs(curve["accuracy"] - curve["confidence"])[seen] * curve["count"][seen]
        assert m["ece"] == pytest.approx(gaps.sum() / curve["count"].sum(), abs=1e-5)
        assert m["top5"] >= m["top1"]
    assert metrics["ranks"]["group"]["top5"] == 1.0  # 4 groups: the true group is always in the top 5
    r = store.ranks.index("subgroup")
    assert metrics["ranks"]["subgroup"]["n"] == int((store.labels[store.splits["test"], r] >= 0).sum())

    with (trained_run / "per_class.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(store.taxonomy.num_classes)
    for r, rank in enumerate(store.ranks):
        assert sum(int(x["support"]) for x in rows if x["rank"] == rank) == metrics["ranks"][rank]["n"]
        # each class's train records, as training saw them: the report's recall-against-frequency plot uses them
        train = store.labels[store.splits["train"], r]
        assert {x["class"]: int(x["train_count"]) for x in rows if x["rank"] == rank} == {
            name: int((train == i).sum()) for i, name in enumerate(store.taxonomy.names[r])}

    html = (trained_run / "report.html").read_text()
    linked = [x for x in re.findall(r'(?:src|href)="([^"]+)"', html) if not x.startswith(("data:", "#"))]
    for rank in store.ranks:
        assert f"confusion_{rank}.png" in linked
    assert "curves_loss.png" in linked and "curves_accuracy.png" in linked and "reliability.png" in linked
    assert "recall_by_frequency.png" in linked and "<th>train records</th>" in html
    for name in linked:
        assert (trained_run / name).is_file(), f"report links a missing file: {name}"
    with Image.open(trained_run / "confusion_class.png") as im:
        assert im.size[0] > 500


def test_evaluate_defaults_to_the_training_invariances(trained_run: Path) -> None:
    assert main(["evaluate", str(trained_run), "--split", "val"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["tta"] == "dihedral"  # trained with flips + rot90 and evaluated without --tta


def test_evaluate_with_tta_records_it(trained_run: Path) -> None:
    assert main(["evaluate", str(trained_run), "--tta", "flip", "--split", "val"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["evaluation"]["tta"] == "flip" and metrics["evaluation"]["split"] == "val"
    assert "test-time augmentation: flip" in (trained_run / "report.html").read_text()


def test_evaluate_a_folder_without_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoints/best.ckpt" in err and err.count("\n") == 0


def test_checkpoint_from_elsewhere_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "not a taxotrain checkpoint" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"garbage")
    assert main(["predict", str(tmp_path / "run"), str(tmp_path)]) == 2
    assert "not a loadable checkpoint" in capsys.readouterr().err


def test_a_store_prepared_again_is_refused(synthetic_set: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    images, taxonomy = synthetic_set
    store, run = tmp_path / "s.h5", tmp_path / "run"
    prep = ["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species", "--out", str(store)]
    assert main([*prep, "--seed", "0"]) == 0
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", "model.backbone=test_resnet",
                 "data.image_size=32", "data.num_workers=0", "logging.mlflow=false", "logging.tensorboard=false"]) == 0
    before = store.read_bytes()
    capsys.readouterr()
    assert main([*prep, "--seed", "1"]) == 2  # prepare never replaces a store unless asked
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1 and store.read_bytes() == before
    assert main([*prep, "--seed", "1", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2  # other test records now: scoring them would mix in training records
    err = capsys.readouterr().err
    assert "not the store" in err and "--store" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- the report page, on data in the repo


@pytest.fixture(scope="module")
def synthetic_report(synthetic_set: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, store): a 1-epoch run on the demo's synthetic 12-species set, evaluated on its test split; needs no
    ../shared, so CI without the plankton folder still covers the report page."""
    images, taxonomy = synthetic_set
    root = tmp_path_factory.mktemp("synthetic_report")
    store, run = root / "s.h5", root / "run"
    assert main(["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species", "--test",
                 "0.3", "--out", str(store)]) == 0
    assert main(["fit", f"data.store={store}", f"run.dir={run}", "trainer.max_epochs=1", "model.backbone=test_resnet",
                 "data.image_size=32", "data.num_workers=0", "logging.mlflow=false",
                 "logging.tensorboard=false"]) == 0
    assert main(["evaluate", str(run)]) == 0
    return run, store


@pytest.fixture(params=["images", "signals"])
def evaluated(request: pytest.FixtureRequest) -> tuple[Path, Taxonomy]:
    """(run, taxonomy) of an evaluated run: the synthetic 3-rank image run, or the 1-rank GunPoint signal run."""
    if request.param == "images":
        run, store = request.getfixturevalue("synthetic_report")
    else:
        run, store = request.getfixturevalue("signal_run"), request.getfixturevalue("gunpoint_store")
        if not (run / "report.html").is_file():
            assert main(["evaluate", str(run), "--no-baseline"]) == 0
    return run, Store(store).taxonomy


def _predictions(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "predictions_test.npz") as npz:
        return dict(npz)


def test_report_page_is_whole_when_copied_alone(evaluated: tuple[Path, Taxonomy]) -> None:
    run, taxonomy = evaluated
    page = (run / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), "an image is not embedded"
    assert not re.search(r"<script [^>]*src=|<link |https?://", page)  # no outside scripts, styles or fetches
    for name in [f"confusion_{r}.png" for r in taxonomy.ranks] + ["curves_loss.png", "curves_accuracy.png"]:
        png = (run / name).read_bytes()  # the files beside the page stay, and are the embedded figures
        assert base64.b64encode(png).decode() in page, f"{name} is not embedded"
        assert f'href="{name}"' in page
    assert "the same figures" in page
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{anchor}"' in page, f"the page links a section it lacks: #{anchor}"
    for name in re.findall(r'href="([^"#][^"]*)"', page):
        assert (run / name).is_file(), f"report links a missing file: {name}"


def test_gallery_shows_the_most_confident_mistakes(evaluated: tuple[Path, Taxonomy]) -> None:
    run, taxonomy = evaluated
    pred = _predictions(run)
    fine = len(taxonomy.ranks) - 1
    true, decoded, probs = pred["labels"][:, fine], pred["decoded"][:, fine], pred[f"probs_{taxonomy.finest}"]
    wrong = np.flatnonzero((true >= 0) & (decoded >= 0) & (true != decoded))
    assert len(wrong) > 0, "a 1-epoch run makes mistakes; the gallery needs some to be tested"
    names = taxonomy.names[fine]
    expected = {int(pred["indices"][i]): (names[true[i]], names[decoded[i]], float(probs[i, decoded[i]]),
                                          taxonomy.tree_distance(fine, int(true[i]), int(decoded[i])))
                for i in wrong}
    page = (run / "report.html").read_text().replace("<wbr>", "")  # names may wrap after their underscores
    items = re.findall(r'<figure class="mistake" data-index="(\d+)"><img src="data:image/png;base64,([^"]+)"[^>]*>'
                       r'<figcaption><span class="true">true: ([^<]+)</span><br><span class="pred">predicted: '
                       r'([^<]+)</span> \(([\d.]+)\)<br>(?:<span class="dist">tree distance (\d+))?', page)
    assert len(items) == min(40, len(wrong))
    confidences = [float(c) for *_, c, _ in items]
    assert confidences == sorted(confidences, reverse=True)  # most confident mistakes first
    for index, thumb, t, p, conf, dist in items:
        t_name, p_name, p_conf, p_dist = expected[int(index)]  # a wrong record of predictions_test.npz ...
        assert (t, p) == (t_name, p_name)  # ... with its true and predicted names
        # the tree distance where there is a tree; a one-rank set (signals) has nothing to say there
        assert (int(dist) == p_dist) if len(taxonomy.ranks) > 1 else dist == ""
        assert abs(float(conf) - p_conf) < 0.006
        with Image.open(io.BytesIO(base64.b64decode(thumb))) as im:
            assert im.format == "PNG" and min(im.size) <= 96 and max(im.size) <= 192  # a thumbnail


def _table_rows(page: str, cls: str) -> list[list[str]]:
    """Cell texts of the rows of the first ``<table class="cls">`` in the page."""
    table = re.search(rf'<table class="{cls}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert table, f"no table {cls}"
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.group(1))]


def test_confused_pairs_are_ranked_by_count_with_tree_distance(evaluated: tuple[Path, Taxonomy]) -> None:
    run, taxonomy = evaluated
    pred = _predictions(run)
    fine = len(taxonomy.ranks) - 1
    # what the heads predicted, as the confusion matrix counts it
    cm = confusion(pred[f"probs_{taxonomy.finest}"], pred["labels"][:, fine])
    rows = _table_rows((run / "report.html").read_text(), "pairs")  # the finest rank's table comes first
    np.fill_diagonal(cm, 0)
    assert rows and len(rows) == min(25, int((cm > 0).sum()))
    counts = [int(r[3]) for r in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] == cm.max()
    for _, t, p, count, _, dist, _ in rows:
        a, b = taxonomy.index(fine, t), taxonomy.index(fine, p)
        assert int(count) == cm[a, b] and int(dist) == taxonomy.tree_distance(fine, a, b)


def test_rollup_accounts_for_every_record_and_headline_names_heads_and_path(
        evaluated: tuple[Path, Taxonomy]) -> None:
    run, taxonomy = evaluated
    page = (run / "report.html").read_text()
    roll = json.loads((run / "metrics.json").read_text())["hierarchy"]["rollup"]
    rows = _table_rows(page, "rollup")
    assert [r[0] for r in rows] == [*taxonomy.ranks, "no rank"]
    shares = [float(r[1].rstrip("%")) for r in rows]
    assert abs(sum(shares) - 100) < 0.2
    assert abs(shares[-1] - 100 * roll["reported_at_none"]) < 0.06
    assert re.search("reported at " + ", ".join(rf"{r} [\d.]+%" for r in [*taxonomy.ranks, "no rank"]), page)
    headline = re.search(r'<table class="headline">.*?</table>', page, re.S).group(0)
    assert "each rank's own head" in headline and "consistent path" in headline


def test_per_class_tables_are_sortable_and_complete(evaluated: tuple[Path, Taxonomy]) -> None:
    run, taxonomy = evaluated
    page = (run / "report.html").read_text()
    tables = re.findall(r'<table class="sortable per-class">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert len(tables) == len(taxonomy.ranks)
    with (run / "per_class.csv").open(newline="") as fh:
        support = {(r["rank"], r["class"]): (r["support"], r["train_count"]) for r in csv.DictReader(fh)}
    for rank, body in zip(reversed(taxonomy.ranks), tables, strict=True):  # finest rank first
        rows = re.findall(r'<tr><td class="name">([^<]+)</td>.*?<td data-v="(\d+)">\d+</td>'
                          r'<td data-v="(\d+)">\d+</td><td class="name">', body)
        assert len(rows) == len(taxonomy.names[taxonomy.ranks.index(rank)])
        assert all(support[rank, name] == (n, train) for name, n, train in rows)
    assert 'querySelectorAll("table.sortable th")' in page


# ---------------------------------------------------------------------------- figures: no clipped or piled-up text


def _taxonomy(n: int) -> Taxonomy:
    """``n`` classes under 3 groups with plankton-like names of 10 to 40 characters."""
    rows = []
    for i in range(n):
        group = ["crustaceans", "gelatinous_zooplankton", "protists"][i % 3]
        rows.append((group, f"{group}_sub{i % 4}", f"{group[:8]}_{'x' * ((i * 7) % 28)}_{i:03d}"))
    return Taxonomy.from_rows(["group", "subgroup", "class"], rows)


def _inside(box: Bbox, outer: Bbox, tol: float = 1.0) -> bool:
    return (box.x0 >= outer.x0 - tol and box.x1 <= outer.x1 + tol and box.y0 >= outer.y0 - tol
            and box.y1 <= outer.y1 + tol)


def _texts(fig: Figure) -> list[Text]:
    """The texts the figure draws (tick labels of ticks outside the view exist but are not drawn)."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            hidden |= {id(label) for tick in axis.get_major_ticks() if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9
                       for label in (tick.label1, tick.label2)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


@pytest.mark.parametrize("n", [4, 14, 121])
def test_confusion_figure_text_fits_and_does_not_overlap(n: int) -> None:
    taxonomy = _taxonomy(n)
    rng = np.random.default_rng(n)
    cm = rng.poisson(0.4, (n, n)) + np.diag(rng.integers(5, 400, n))
    fig = confusion_figure(cm, taxonomy, 2)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for t in _texts(fig):  # titles, class names, axis labels, colour bar: nothing cut off at the canvas edge
        assert _inside(t.get_window_extent(renderer), fig.bbox), f"clipped: {t.get_text()!r}"
    title = fig.get_suptitle()
    assert title.startswith("class: confusion matrix")
    ax = fig.axes[0]
    cells = [t for t in ax.texts if t.get_gid() == "cell"]
    for t in cells:  # each number stays inside its own cell, so no two overlap
        j, i = t.get_position()
        corners = ax.transData.transform([(j - 0.5, i + 0.5), (j + 0.5, i - 0.5)])
        assert _inside(t.get_window_extent(renderer), Bbox(corners), tol=0.5), t.get_text()
        frac, count = t.get_text().split("\n")
        assert int(count) == cm[int(i), int(j)]  # counts as well as fractions
    if n <= 14:
        assert len(cells) == int((cm > 0).sum())
    else:
        assert not cells  # 121 classes: cells too small for legible numbers, so none are written
    for labels, axis in ((ax.get_yticklabels(), 1), (ax.get_xticklabels(), 0)):  # class names do not pile up
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.get_points()[0, axis])
        for a, b in itertools.pairwise(boxes):
            assert a.get_points()[1, axis] <= b.get_points()[0, axis] + 0.5
        assert labels[0].get_fontsize() >= 6  # readable when the figure is shown at full size
    plt.close(fig)


def test_curve_figures_fit(tmp_path: Path) -> None:
    ranks = ["group", "subgroup", "class"]
    cols = ["epoch", "train/loss", "val/loss", *(f"val/{r}/{m}" for r in ranks for m in ("top1", "macro_f1"))]
    with (tmp_path / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        writer.writerows([[e, 3 - e, 3.2 - e, *[0.1 * e + 0.2] * (len(cols) - 3)] for e in range(4)])
    figures = curve_figures(tmp_path / "metrics.csv", ranks)
    assert set(figures) == {"curves_loss.png", "curves_accuracy.png"}
    for fig in figures.values():
        fig.canvas.draw()
        assert fig.get_suptitle()
        for t in _texts(fig):
            assert _inside(t.get_window_extent(fig.canvas.get_renderer()), fig.bbox), f"clipped: {t.get_text()!r}"
        plt.close(fig)


def test_recall_by_frequency_figure_fits_and_draws_every_class_with_a_test_record() -> None:
    rng = np.random.default_rng(0)
    counts = np.round(np.exp(rng.uniform(np.log(6), np.log(1622), 121))).astype(int)  # plankton's range
    rows = [{"rank": "class", "class": f"c{i}", "recall": float(rng.uniform()), "support": int(i % 7),
             "train_count": int(n)} for i, n in enumerate(counts)]
    fig = recall_by_frequency_figure(rows, ["class"])
    fig.canvas.draw()
    for t in _texts(fig):
        assert _inside(t.get_window_extent(fig.canvas.get_renderer()), fig.bbox), f"clipped: {t.get_text()!r}"
    dots = fig.axes[0].collections[0].get_offsets()
    assert len(dots) == sum(r["support"] > 0 for r in rows)  # a class with no test record has no recall
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)
