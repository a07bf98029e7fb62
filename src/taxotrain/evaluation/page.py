"""The evaluation report as one self-contained HTML page: figures and thumbnails are embedded as data URIs, and the
only script is the inline one that sorts tables and zooms figures, so a ``report.html`` copied alone is whole."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taxotrain.evaluation.metrics import per_rank
from taxotrain.evaluation.mistakes import Mistake, confused_pairs, most_confused_with
from taxotrain.taxonomy import Taxonomy


@dataclass
class ReportInputs:
    """Everything the page shows: the run's name and model, ``metrics.json``'s content, the per-class rows, the
    confusion matrix of each rank (the heads' argmax), the figure files and the gallery of mistakes."""

    name: str
    backbone: str
    inputs: str
    metrics: dict[str, Any]
    taxonomy: Taxonomy
    rows: list[dict[str, Any]]
    confusions: list[np.ndarray]
    figures: list[Path]
    mistakes: list[Mistake]


def _e(value: Any) -> str:
    return html.escape(str(value))


def _name(value: str) -> str:
    """A class name that may wrap after its underscores (names like ``copepod_calanoid_large`` have no spaces)."""
    return _e(value).replace("_", "_<wbr>")


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else _e(v)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222 }
table { border-collapse: collapse; margin: 1em 0 } td, th { border: 1px solid #ccc; padding: 3px 8px;
text-align: right } td.name, th.name { text-align: left } th { background: #f0f0f0 } th[colspan] { text-align: center }
table.pairs td.name { white-space: nowrap }
.meta { color: #555 } nav a { margin-right: 1em } details { margin: 1em 0 } summary { cursor: pointer }
.scroll { max-height: 36em; overflow: auto; display: inline-block; border: 1px solid #ddd }
.scroll table { margin: 0 } .scroll th { position: sticky; top: 0 }
table.sortable th { cursor: pointer; user-select: none } table.sortable th[data-dir=asc]::after { content: " ▲" }
table.sortable th[data-dir=desc]::after { content: " ▼" }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px }
.mistake { margin: 0; padding: 6px; border: 1px solid #ddd; border-radius: 4px; font-size: 12px;
overflow-wrap: anywhere } .mistake img { display: block; margin: 0 auto 4px; max-width: 100%; height: 96px;
object-fit: contain; image-rendering: auto } .mistake .true { color: #1a6b1a } .mistake .pred { color: #b02020 }
.nothumb { height: 96px; display: flex; align-items: center; justify-content: center; color: #999 }
.fig { margin: 1em 0 } .fig .box { overflow: auto; max-height: 90vh } .fig img { max-width: 100%; cursor: zoom-in }
.fig img.full { max-width: none; cursor: zoom-out }
"""

SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], col = th.cellIndex;
  const dir = th.dataset.dir === "desc" ? "asc" : "desc";
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
  const key = td => td.dataset.v !== undefined ? parseFloat(td.dataset.v) : td.textContent.toLowerCase();
  [...body.rows].sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    return (x < y ? -1 : x > y ? 1 : 0) * (dir === "asc" ? 1 : -1);
  }).forEach(r => body.appendChild(r));
}));
document.querySelectorAll(".fig img").forEach(img => img.addEventListener("click", () => img.classList.toggle("full")));
"""

NAV = [("headline", "per rank"), ("metadata", "metadata"), ("hierarchy", "hierarchy"), ("rollup", "roll-up"),
       ("retrieval", "retrieval"),
       ("gallery", "mistakes"),
       ("pairs", "confused pairs"), ("per-class", "per class"), ("figures", "figures")]


def headline_table(metrics: dict[str, Any], classes: dict[str, int] | None = None) -> str:
    """Top-1, top-5, macro-F1 and balanced accuracy of each rank's own head, beside the consistent path's top-1,
    with headers that say which is which (also the demo's index page)."""
    scores = per_rank(metrics)
    path = (metrics.get("hierarchy") or {}).get("decoded_top1") or {}
    ncls = "<th rowspan=\"2\">classes</th>" if classes else ""
    head = (f"<thead><tr><th rowspan=\"2\" class=\"name\">rank</th>{ncls}<th rowspan=\"2\">records</th>"
            "<th colspan=\"5\">each rank's own head</th><th>consistent path</th></tr><tr><th>top-1</th>"
            "<th>top-5</th><th>macro-F1</th><th>balanced acc.</th><th title=\"expected calibration error: the mean "
            "gap between confidence and accuracy (0 is best)\">ECE</th><th>top-1</th></tr></thead>")
    body = "".join(
        f"<tr><td class=\"name\">{_e(r)}</td>" + (f"<td>{classes.get(r, '–')}</td>" if classes else "")
        + f"<td>{_fmt(m.get('n'))}</td>"
        + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in ("top1", "top5", "macro_f1", "balanced_accuracy", "ece"))
        + f"<td>{_fmt(path.get(r))}</td></tr>" for r, m in scores.items())
    return f"<table class=\"headline\">{head}<tbody>{body}</tbody></table>"


def _headline_html(inp: ReportInputs) -> str:
    tax = inp.taxonomy
    classes = dict(zip(tax.ranks, tax.num_classes, strict=True))
    return (f"<h2 id=\"headline\">Metrics per rank</h2>{headline_table(inp.metrics, classes)}"
            "<p class=\"meta\">Fractions. <b>Each rank's own head</b>: that rank's classifier on its own (its "
            "argmax, as the confusion matrices and the per-class tables below count it). <b>Consistent path</b>: "
            "one label per rank that agrees with the tree, what <code>taxotrain predict</code> writes and the "
            "gallery of mistakes shows. <b>ECE</b>: expected calibration error, the record-weighted gap between "
            "confidence and accuracy over 15 confidence bins (0 = a score of 0.8 is right 80% of the time; "
            "<code>reliability.png</code> below shows it per bin). Records unknown at a rank are left out of that "
            "rank.</p>")


def baseline_top1(baseline: dict[str, Any], finest: str) -> float | None:
    """A baseline's top-1 at the finest rank: its ``top1`` (fitted models), or its ``finest`` rank's (baselines
    scored per rank, such as a prior's class frequency)."""
    if "top1" in baseline:
        return baseline["top1"]
    return (baseline.get(finest) or {}).get("top1") if isinstance(baseline.get(finest), dict) else None


BASELINE_NAMES = {"frequency": "class frequency: the train split's most frequent class for every record",
                  "pixel_centroid": "raw pixels: the nearest class mean of the train split's input pixels"}


def _baseline_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    baselines = metrics.get("baseline") or {}
    if not baselines:
        return ""
    baselines = {k: b if "top1" in b or b.get("skipped") else  # scored per rank: the finest rank's here
                 {"method": BASELINE_NAMES.get(k, k), "top1": baseline_top1(b, ranks[-1]),
                  "seconds": b.get("seconds"), "train_records": b.get("train_records")}
                 for k, b in baselines.items()}
    fit = metrics.get("fit") or {}
    own = f"{fit['seconds'] + fit.get('selection_seconds', 0):.1f}" if fit.get("seconds") is not None else "–"
    name = "this run" + (f" (model.backbone: auto chose {_e(fit['chosen'])}; its time includes fitting every "
                         "candidate)" if "chosen" in fit else "")
    rows = "".join(f"<tr><td class=\"name\">{_e(b['method'])}</td><td>{_fmt(b['top1'])}</td>"
                   f"<td>{_fmt(b.get('seconds'))}</td><td>{_fmt(b.get('train_records'))}</td></tr>"
                   if b.get("top1") is not None else
                   f"<tr><td class=\"name\">{_e(b.get('name', '?'))}: {_e(b.get('skipped', ''))}</td><td>–</td>"
                   "<td>–</td><td>–</td></tr>" for b in baselines.values())
    return (f"<h2>Baselines</h2><table><tr><th class=\"name\">model</th><th>top-1</th><th>fit (s)</th>"
            f"<th>train records</th></tr><tr><td class=\"name\">{name}</td>"
            f"<td>{_fmt(metrics['ranks'][ranks[-1]]['top1'])}</td><td>{own}</td><td>–</td></tr>{rows}</table>"
            "<p class=\"meta\">Top-1 at the finest rank. Each baseline is fitted on the same train split as the run "
            "and scored on the same records; its time includes predicting them. This run's time is its training "
            "epochs' (<code>metrics.csv</code>), start-up excluded.</p>")


def _metadata_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    """Top-1 per rank with all the place/date metadata, none, and each component missing alone."""
    found = metrics.get("metadata")
    if not found:
        return ""
    head = "<tr><th class=\"name\">metadata given</th>" + "".join(f"<th>{_e(r)} top-1</th>" for r in ranks) + \
        f"<th>{_e(ranks[-1])} top-5</th></tr>"

    def label(name: str) -> str:
        return {"all": "all", "none": "none"}.get(name, f"all but {name.removesuffix('_masked')}")

    rows = "".join(f"<tr><td class=\"name\">{_e(label(name))}</td>"
                   + "".join(f"<td>{_fmt((v.get(r) or {}).get('top1'))}</td>" for r in ranks)
                   + f"<td>{_fmt((v.get(ranks[-1]) or {}).get('top5'))}</td></tr>" for name, v in found.items())
    return (f"<h2 id=\"metadata\">Place and date</h2><table>{rows and head}{rows}</table><p class=\"meta\">The "
            "same records scored with all their metadata (the figures above), with none of it, and with each "
            "component missing alone, as when a record comes without it. The gap between <i>all</i> and "
            "<i>none</i> is what the metadata adds. <code>metrics.json</code> -&gt; <code>metadata</code>.</p>")


def rollup_shares(roll: dict[str, Any]) -> dict[str, float]:
    """Share of the records reported at each rank and at none (``metrics.json`` files written before
    ``reported_at_none`` existed: the rest); the shares sum to 1."""
    shares = dict(roll["reported_at"])
    none = roll.get("reported_at_none")
    shares["no rank"] = max(0.0, 1.0 - sum(shares.values())) if none is None else none
    return shares


def _rollup_html(roll: dict[str, Any], records: int) -> str:
    shares = rollup_shares(roll)
    precision = roll.get("precision_per_rank") or {}
    thresholds = roll.get("thresholds") or {}
    body = "".join(
        f"<tr><td class=\"name\">{_e(r)}</td><td class=\"share\">{v:.1%}</td><td>{round(v * records)}</td>"
        f"<td>{_fmt(precision.get(r))}</td><td>{_fmt(thresholds.get(r))}</td></tr>" for r, v in shares.items())
    total = sum(shares.values())
    sentence = ", ".join(f"{_e(r)} {v:.1%}" for r, v in shares.items())
    measured = _e(roll.get("measured_on", "the evaluated"))
    chosen = _e(roll.get("chosen_on", "val"))
    return ("<h2 id=\"rollup\">Roll-up: the rank each record is named at</h2><p>Each record is named at the "
            "deepest rank whose confidence passes that rank's threshold, as <code>taxotrain predict</code> reports "
            f"it (thresholds chosen on the {chosen} split for a precision of {roll['target_precision']:.0%}). On the "
            f"{measured} split the records are reported at {sentence} (total {total:.1%}); precision at the "
            f"reported rank {_fmt(roll.get('precision_at_reported_rank'))}.</p>"
            "<table class=\"rollup\"><thead><tr><th class=\"name\">reported at</th><th>share of records</th>"
            f"<th>records</th><th>precision there</th><th>threshold</th></tr></thead><tbody>{body}</tbody>"
            f"<tfoot><tr><td class=\"name\">total</td><td>{total:.1%}</td><td>{records}</td><td></td><td></td>"
            "</tr></tfoot></table>")


def _rollup_section(metrics: dict[str, Any]) -> str:
    roll = (metrics.get("hierarchy") or {}).get("rollup")
    return _rollup_html(roll, metrics["evaluation"]["records"]) if roll else ""


def _hierarchy_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    h = metrics.get("hierarchy")
    if not h or len(ranks) < 2:  # one rank (e.g. a signal set's class): nothing hierarchical to show
        return ""
    keys = ["chain_accuracy", "partial_chain_accuracy", "mistake_severity", "mistake_tree_distance",
            "hierarchical_distance_at_1", "hierarchical_precision", "hierarchical_recall", "hierarchical_f1"]
    first = "".join(f"<tr><td class=\"name\">{k.replace('_', ' ')}</td><td>{_fmt(h.get(k))}</td></tr>" for k in keys)
    per_rank_rows = "".join(
        f"<tr><td class=\"name\">{_e(r)}</td><td>{_fmt(metrics['ranks'][r]['top1'])}</td>"
        f"<td>{_fmt(h['decoded_top1'][r])}</td><td>{_fmt(h['coarse_from_fine'].get(r))}</td></tr>" for r in ranks)
    return (f"<h2 id=\"hierarchy\">Does the hierarchy pay?</h2>\n<table>{first}</table><table><tr>"
            "<th class=\"name\">rank</th><th>own head top-1</th><th>consistent path top-1</th>"
            f"<th>finest head summed to this rank</th></tr>{per_rank_rows}</table>"
            "<p class=\"meta\">Mistake severity: mean number of ranks up to the common ancestor of a wrong finest "
            "prediction and the truth (1 = sibling); hierarchical distance at 1 averages that height over all "
            "records, right ones counting 0. Hierarchical P/R/F1 count every node on the predicted and true "
            "paths (Kiritchenko et al.).</p>")


def _retrieval_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    """Retrieval per rank and per group, and the held-out classes' few-shot and open-set figures when there are."""
    found = metrics.get("retrieval")
    if not found:
        return ""
    setup = metrics.get("retrieval_setup") or {}
    k = setup.get("knn_k", "k")
    head = ("<tr><th class=\"name\">rank</th><th>queries</th><th>precision@1</th><th>recall@5</th><th>MAP@R</th>"
            f"<th>k-NN top-1 (k={_e(k)})</th></tr>")
    rows = "".join(f"<tr><td class=\"name\">{_e(r)}</td><td>{_fmt(m.get('queries'))}</td>"
                   + "".join(f"<td>{_fmt(m.get(key))}</td>" for key in ("precision_at_1", "recall_at_5", "map_at_r",
                                                                        "knn_top1"))
                   + "</tr>" for r, m in found.items())
    parts = [f"<h2 id=\"retrieval\">Retrieval: nearest neighbours in the train split</h2><table>{head}{rows}</table>"
             f"<p class=\"meta\">Each {_e(setup.get('queries', 'evaluated'))} record's embedding (the model on the "
             "evaluation transforms, L2-normalised"
             + (f"; the mean of its {_e(setup['tta'])} test-time views, gallery and queries alike"
                if setup.get("tta") not in (None, "none") else "")
             + ") searched among the "
             f"{_e(setup.get('gallery_records', ''))} train records by cosine similarity. Precision@1: the nearest "
             "shares the query's label; recall@5: one of the 5 nearest does; MAP@R (Musgrave et al. 2020): the mean "
             "precision over the R nearest, R being the train records of the query's class; k-NN top-1: the vote of "
             "the k nearest weighted by exp(cos / 0.07). Queries unknown at a rank, or of a class with no train "
             "record, are not scored there.</p>"]
    groups = metrics.get("retrieval_by_group") or {}
    if groups:
        g_head = "<tr><th class=\"name\">group</th><th>queries</th>" + "".join(
            f"<th>P@1 {_e(r)}</th>" for r in ranks) + "</tr>"
        g_rows = "".join(f"<tr><td class=\"name\">{_name(str(g))}</td><td>{_fmt(row.get('queries'))}</td>"
                         + "".join(f"<td>{_fmt(row.get(r))}</td>" for r in ranks) + "</tr>"
                         for g, row in groups.items())
        parts.append(f"<h3>Precision@1 within each {_e(ranks[0])}</h3><table class=\"sortable\">{g_head}{g_rows}"
                     "</table>")
    held = metrics.get("heldout")
    if held:
        h_head = ("<tr><th class=\"name\">rank</th><th>records</th><th>classes</th><th>leave-one-out P@1</th>"
                  "<th>1-shot</th><th>5-shot</th></tr>")
        h_rows = "".join(f"<tr><td class=\"name\">{_e(r)}</td><td>{_fmt(m.get('records'))}</td>"
                         f"<td>{_fmt(m.get('classes'))}</td><td>{_fmt(m.get('loo_precision_at_1'))}</td>"
                         f"<td>{_fmt(m.get('fewshot_1'))}</td><td>{_fmt(m.get('fewshot_5'))}</td></tr>"
                         for r, m in held.items())
        floor = ((metrics.get("baseline") or {}).get("pixel_centroid") or {}).get("heldout") or {}
        h_rows += "".join(f"<tr><td class=\"name\">{_e(r)}: raw pixels (floor)</td><td>–</td><td>–</td>"
                          f"<td>{_fmt(m.get('loo_precision_at_1'))}</td><td>{_fmt(m.get('fewshot_1'))}</td>"
                          f"<td>{_fmt(m.get('fewshot_5'))}</td></tr>" for r, m in floor.items())
        skipped = ((metrics.get("baseline") or {}).get("pixel_centroid") or {}).get("heldout_skipped")
        h_rows += (f"<tr><td class=\"name\">raw pixels (floor)</td><td colspan=\"5\">not computed: {_e(skipped)}"
                   "</td></tr>" if skipped else "")
        parts.append("<h3>Held-out classes (never trained on)</h3>"
                     f"<table>{h_head}{h_rows}</table><p class=\"meta\">Leave-one-out P@1: each held-out record's "
                     "nearest among the other held-out records shares its label. 1-/5-shot: SimpleShot, the "
                     "embeddings centred on the train split's mean and L2-normalised, each record named by the "
                     f"nearest mean of 1 or 5 random references per class (mean of "
                     f"{_e(setup.get('fewshot_draws', 5))} seeded draws; classes with too few records left out). "
                     "The raw-pixel rows apply the same rules to the input pixels: the floor.</p>")
    opened = metrics.get("openset")
    if opened:
        threshold = opened.get("threshold")
        at = (f" At the threshold {_fmt(threshold)} chosen on {_e(opened.get('chosen_on'))} for a precision of "
              f"{opened['target_precision']:.0%} of the nearest neighbour's {_e(opened.get('rank'))}, "
              f"{_fmt(opened.get('known_accepted'))} of the known records are accepted and "
              f"{_fmt(opened.get('unknown_rejected'))} of the held-out ones are called unknown: open-set accuracy "
              f"{_fmt(opened.get('accuracy'))}." if threshold is not None else "")
        parts.append(f"<p>Known or new? The largest cosine similarity to the train split tells the "
                     f"{opened['known']} known records from the {opened['unknown']} held-out ones with an AUROC of "
                     f"{_fmt(opened.get('auroc'))} (1 = always, 0.5 = chance).{at}</p>")
    return "".join(parts)


def _gallery_html(inp: ReportInputs) -> str:
    fine = inp.taxonomy.finest
    split = inp.metrics["evaluation"]["split"]
    wrong = (inp.metrics.get("hierarchy") or {}).get("mistakes")
    if not inp.mistakes:
        return f"<h2 id=\"gallery\">Mistakes</h2><p>No wrong {_e(fine)} on the {_e(split)} split.</p>"
    items = []
    tree = len(inp.taxonomy.ranks) > 1  # with one rank every mistake is as far as the root: nothing to say
    for m in inp.mistakes:
        img = (f"<img src=\"{data_uri(m.thumbnail)}\" alt=\"record {m.index}\">" if m.thumbnail
               else "<div class=\"nothumb\">no thumbnail</div>")
        where = f"<span class=\"dist\">tree distance {m.distance}, shared: {_e(m.shared)}</span><br>" if tree else ""
        items.append(f"<figure class=\"mistake\" data-index=\"{m.index}\">{img}<figcaption>"
                     f"<span class=\"true\">true: {_name(m.true)}</span><br>"
                     f"<span class=\"pred\">predicted: {_name(m.predicted)}</span> ({m.confidence:.2f})<br>"
                     f"{where}<span class=\"meta\">record {m.index}</span></figcaption></figure>")
    of = f" of the {wrong} wrong records" if wrong is not None else ""
    return (f"<h2 id=\"gallery\">Mistakes: most confident first</h2><p class=\"meta\">The {len(inp.mistakes)} "
            f"most confident wrong {_e(fine)} predictions{of} on the {_e(split)} split, by the consistent path "
            f"(what <code>taxotrain predict</code> reports); in brackets the finest head's probability of the "
            "wrong class." + (" Tree distance: edges between the true and the predicted class (2 = siblings); "
                              "shared: their lowest common ancestor." if tree else "") +
            " Record: the index in the store.</p>"
            f"<div class=\"gallery\">{''.join(items)}</div>")


def _pairs_table(inp: ReportInputs, r: int) -> str:
    pairs = confused_pairs(inp.confusions[r], inp.taxonomy, r)
    if not pairs:
        return "<p>No confusions.</p>"
    body = "".join(f"<tr><td>{k}</td><td class=\"name\">{_e(p.true)}</td><td class=\"name\">{_e(p.predicted)}</td>"
                   f"<td class=\"count\">{p.count}</td><td>{p.fraction:.1%}</td><td class=\"dist\">{p.distance}</td>"
                   f"<td class=\"name\">{_e(p.shared)}</td></tr>" for k, p in enumerate(pairs, 1))
    return ("<table class=\"pairs\"><thead><tr><th>#</th><th class=\"name\">true</th><th class=\"name\">predicted "
            "as</th><th>records</th><th>share of the true class</th><th>tree distance</th><th class=\"name\">"
            f"common ancestor</th></tr></thead><tbody>{body}</tbody></table>")


def _per_rank(inp: ReportInputs, table: Any, with_count: bool) -> list[str]:
    """One collapsible block per rank, finest first and open, holding ``table(inp, r)``."""
    ranks, sizes = inp.taxonomy.ranks, inp.taxonomy.num_classes
    return [f"<details{' open' if r == len(ranks) - 1 else ''}><summary>{_e(rank)}"
            f"{f' ({sizes[r]} classes)' if with_count else ''}</summary>{table(inp, r)}</details>"
            for r, rank in reversed(list(enumerate(ranks)))]


def _pairs_html(inp: ReportInputs) -> str:
    parts = _per_rank(inp, _pairs_table, with_count=False)
    return ("<h2 id=\"pairs\">Most confused pairs</h2><p class=\"meta\">The largest off-diagonal cells of each "
            "rank's confusion matrix (each rank's own head), by number of records; share: of the true class's "
            "records; tree distance: edges between the two classes in the taxonomy.</p>" + "".join(parts))


def _per_class_table(inp: ReportInputs, r: int) -> str:
    rank, names = inp.taxonomy.ranks[r], inp.taxonomy.names[r]
    other, times = most_confused_with(inp.confusions[r])
    rows = [x for x in inp.rows if x["rank"] == rank]
    body = "".join(
        f"<tr><td class=\"name\">{_e(x['class'])}</td>"
        + "".join(f"<td data-v=\"{x[k]}\">{x[k]:.3f}</td>" for k in ("precision", "recall", "f1"))
        + f"<td data-v=\"{x['support']}\">{x['support']}</td>"
        + (f"<td data-v=\"{x['train_count']}\">{x['train_count']}</td>" if "train_count" in x else "<td>–</td>")
        + f"<td class=\"name\">{_e(names[other[i]]) if other[i] >= 0 else '–'}</td>"
        + f"<td data-v=\"{times[i]}\">{times[i]}</td></tr>" for i, x in enumerate(rows))
    return ("<div class=\"scroll\"><table class=\"sortable per-class\"><thead><tr><th class=\"name\">class</th>"
            "<th>precision</th><th>recall</th><th>F1</th><th>support</th><th>train records</th>"
            "<th class=\"name\">most often predicted "
            f"as</th><th>records</th></tr></thead><tbody>{body}</tbody></table></div>")


def _per_class_html(inp: ReportInputs) -> str:
    parts = _per_rank(inp, _per_class_table, with_count=True)
    return ("<h2 id=\"per-class\">Per class</h2><p class=\"meta\">Each rank's own head. Click a column's header to "
            "sort by it (again to reverse). Also in <a href=\"per_class.csv\">per_class.csv</a>.</p>"
            + "".join(parts))


BIG_MATRIX = 40  # classes: above this a confusion matrix cannot be read at the page's width


def _figures_html(figures: list[Path], taxonomy: Taxonomy) -> str:
    big = {f"confusion_{rank}": n for rank, n in zip(taxonomy.ranks, taxonomy.num_classes, strict=True)
           if n > BIG_MATRIX}
    items = "".join(
        f"<figure class=\"fig\"><div class=\"box\"><img src=\"{data_uri(p.read_bytes())}\" alt=\"{_e(p.stem)}\">"
        f"</div><figcaption><a href=\"{_e(p.name)}\">{_e(p.name)}</a>"
        + (f": {big[p.stem]} classes, too many to read at the page's width: click the matrix to see it at full "
           "size, or read the <a href=\"#pairs\">most confused pairs</a> and the <a href=\"#per-class\">per-class "
           "table</a>" if p.stem in big else "")
        + "</figcaption></figure>" for p in figures)
    return ("<h2 id=\"figures\">Training curves, reliability and confusion matrices</h2><p class=\"meta\">"
            "The figures are "
            "embedded in this page; the PNG files beside it in the run folder (linked under each) are the same "
            "figures. Click a figure to see it at full size (and scroll); the confusion matrices count each "
            "rank's own head, rows normalised, with the fraction and the number of records in each cell where "
            f"they fit.</p>{items}")


def render_report(inp: ReportInputs) -> str:
    """The report page for ``inp``."""
    ev = inp.metrics["evaluation"]
    ranks = inp.taxonomy.ranks
    sections = [_headline_html(inp), _metadata_html(inp.metrics, ranks), _baseline_html(inp.metrics, ranks),
                _hierarchy_html(inp.metrics, ranks),
                _rollup_section(inp.metrics), _retrieval_html(inp.metrics, ranks), _gallery_html(inp),
                _pairs_html(inp), _per_class_html(inp), _figures_html(inp.figures, inp.taxonomy)]
    body = "\n".join(sections)
    nav = "".join(f"<a href=\"#{a}\">{t}</a>" for a, t in NAV if f"id=\"{a}\"" in body)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taxotrain report: {_e(inp.name)}</title>
<style>{CSS}</style></head><body>
<h1>taxotrain report: {_e(inp.name)}</h1>
<p class="meta">{_e(ev['split'])} split of <code>{_e(ev['store'])}</code>, {ev['records']} records;
checkpoint <code>{_e(ev['checkpoint'])}</code>; test-time augmentation: {_e(ev['tta'])};
backbone <code>{_e(inp.backbone)}</code> on {_e(inp.inputs)}; evaluated {_e(ev['date'])}.</p>
<nav>{nav}</nav>
{body}
<p class="meta">Files beside this page in the run folder: <a href="metrics.json">metrics.json</a>,
<a href="per_class.csv">per_class.csv</a>, <a href="metrics.csv">metrics.csv</a> (per epoch),
<a href="config.yaml">config.yaml</a>.</p>
<script>{SCRIPT}</script>
</body></html>
"""
