"""``taxotrain evaluate --compare RUN_A RUN_B``: runs side by side on the same test split, in one table and plot."""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from taxotrain.evaluation.report import evaluate_run  # noqa: E402
from taxotrain.files import atomic_path, write_text_atomic  # noqa: E402
from taxotrain.run import RunError, RunPaths  # noqa: E402

HIERARCHY_ROWS = [("chain_accuracy", "higher"), ("partial_chain_accuracy", "higher"),
                  ("hierarchical_f1", "higher"), ("mistake_severity", "lower"), ("mistake_tree_distance", "lower")]


@dataclass
class Comparison:
    """The comparison table and where it was written."""

    rows: list[dict[str, Any]]
    csv: Path
    png: Path
    html: Path


def _metrics(run: Path) -> dict[str, Any]:
    path = RunPaths(run).metrics_json
    if path.is_file():
        metrics = json.loads(path.read_text())
        if "hierarchy" in metrics and metrics.get("evaluation", {}).get("split") == "test":
            return metrics
    return evaluate_run(run).metrics  # not evaluated yet (or on another split): evaluate on test now


def comparison_rows(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric, one column per run; per-rank top-1/macro-F1 first, then the hierarchy metrics."""
    first = next(iter(metrics.values()))
    ranks = [k for k, v in first.items() if k not in ("evaluation", "hierarchy", "baseline") and isinstance(v, dict)]
    rows = []
    for rank in ranks:
        for m in ("top1", "macro_f1"):
            rows.append({"metric": f"{rank} {m}", "better": "higher",
                         **{name: met[rank][m] for name, met in metrics.items()}})
    for key, better in HIERARCHY_ROWS:
        rows.append({"metric": key, "better": better, **{name: met["hierarchy"][key] for name, met in metrics.items()}})
    for rank in ranks[:-1]:
        rows.append({"metric": f"{rank} top1 from summed finest", "better": "higher",
                     **{name: met["hierarchy"]["coarse_from_fine"][rank] for name, met in metrics.items()}})
    return rows


def compare_runs(runs: list[str | Path], out: str | Path) -> Comparison:
    """Write ``compare.csv``, ``compare.png`` and ``compare.html`` for ``runs`` into ``out``."""
    if len(runs) < 2:
        raise RunError("--compare needs at least two run folders")
    names, metrics = [], {}
    for run in map(Path, runs):
        name = run.name if run.name not in names else str(run)
        names.append(name)
        metrics[name] = _metrics(run)
    digests = {n: m["evaluation"].get("split_digest") for n, m in metrics.items()}
    if len(set(digests.values())) > 1:
        raise RunError("the runs were evaluated on different test splits (" + ", ".join(
            f"{n}: {m['evaluation']['store']}" for n, m in metrics.items()) + "); compare runs of the same store")
    rows = comparison_rows(metrics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "compare.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["metric", "better", *names])
        writer.writeheader()
        writer.writerows(rows)
    png = _plot(rows, names, out / "compare.png")
    write_text_atomic(out / "compare.html", _html(rows, names, metrics, png))
    return Comparison(rows, csv_path, png, out / "compare.html")


def _plot(rows: list[dict[str, Any]], names: list[str], path: Path) -> Path:
    shown = [r for r in rows if r["better"] == "higher" and all(r[n] is not None for n in names)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        axes[0].bar([j + i * width for j in range(len(shown))], [r[name] for r in shown], width, label=name)
    axes[0].set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(shown))],
                       [r["metric"] for r in shown], rotation=35, ha="right", fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("higher is better")
    axes[0].legend()
    axes[0].grid(axis="y", alpha=0.3)
    sev = next(r for r in rows if r["metric"] == "mistake_severity")
    axes[1].bar(names, [sev[n] for n in names], color=[f"C{i}" for i in range(len(names))])
    axes[1].set_title("mistake severity\n(lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _html(rows: list[dict[str, Any]], names: list[str], metrics: dict[str, Any], png: Path) -> str:
    def cell(row: dict[str, Any], name: str) -> str:
        vals = [row[n] for n in names if row[n] is not None]
        v = row[name]
        if v is None:
            return "<td>–</td>"
        best = (max if row["better"] == "higher" else min)(vals)
        style = ' style="font-weight:bold"' if v == best and len(set(vals)) > 1 else ""
        return f"<td{style}>{v:.3f}</td>"

    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f"<tr><td>{html.escape(r['metric'])} ({r['better']} is better)</td>"
                   + "".join(cell(r, n) for n in names) + "</tr>" for r in rows)
    ev = next(iter(metrics.values()))["evaluation"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>taxotrain comparison</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto }} table {{ border-collapse:
collapse }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right }} td:first-child {{ text-align:
left }}</style></head><body><h1>Does the hierarchy pay?</h1>
<p>Same test split of <code>{html.escape(str(ev['store']))}</code> ({ev['records']} records). Best value in bold.</p>
<table><tr><th>metric</th>{head}</tr>{body}</table><img src="{png.name}" alt="comparison" style="max-width:100%">
</body></html>
"""


def format_table(comparison: Comparison) -> str:
    """The comparison as a Markdown table (what the CLI prints and the README shows)."""
    names = [k for k in comparison.rows[0] if k not in ("metric", "better")]
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for r in comparison.rows:
        vals = " | ".join("–" if r[n] is None else f"{r[n]:.3f}" for n in names)
        lines.append(f"| {r['metric']} ({r['better']} is better) | {vals} |")
    return "\n".join(lines)
