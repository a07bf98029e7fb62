"""``taxotrain evaluate --compare RUN_A RUN_B``: runs side by side on the same test split, in one table and plot.

Every run after the first also gets its difference from the first with a 95% paired bootstrap interval
(``evaluation/intervals.py``) for the per-rank top-1, chain accuracy, mistake severity and hierarchical distance, and
for image runs evaluated with retrieval the per-rank retrieval precision@1 (MAP@R is shown without an interval), so
the table says which differences the test split can tell apart.

A setting trained with several seeds is given as one comma-joined argument (``flat=runs/f0,runs/f1,runs/f2``; the
``NAME=`` part is optional): its column is the mean over its runs, and its interval also resamples the runs, so a
difference must hold across seeds, not only on the test records, to be starred.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from taxotrain.evaluation.intervals import paired_differences, record_arrays, unpaired_differences  # noqa: E402
from taxotrain.evaluation.metrics import per_rank  # noqa: E402
from taxotrain.evaluation.report import evaluate_run  # noqa: E402
from taxotrain.files import atomic_path, write_text_atomic  # noqa: E402
from taxotrain.run import RunError, RunPaths  # noqa: E402

HIERARCHY_ROWS = [("chain_accuracy", "higher"), ("partial_chain_accuracy", "higher"),
                  ("hierarchical_f1", "higher"), ("mistake_severity", "lower"), ("mistake_tree_distance", "lower"),
                  ("hierarchical_distance_at_1", "lower")]


@dataclass
class Comparison:
    """The comparison table and where it was written."""

    rows: list[dict[str, Any]]
    csv: Path
    png: Path
    html: Path
    names: list[str]

    @property
    def differences(self) -> list[str]:
        """Columns of the differences from the first run (each with ``low``/``high`` columns beside it)."""
        return [f"{n} - {self.names[0]}" for n in self.names[1:]]


def format_difference(row: dict[str, Any], col: str) -> str:
    """``+0.012 [-0.004, +0.027]``, starred when the 95% interval excludes 0; ``–`` without an interval."""
    if row.get(col) is None:
        return "–"
    star = "*" if row[f"{col} low"] > 0 or row[f"{col} high"] < 0 else ""
    return f"{row[col]:+.3f} [{row[f'{col} low']:+.3f}, {row[f'{col} high']:+.3f}]{star}"


def _metrics(run: Path) -> dict[str, Any]:
    path = RunPaths(run).metrics_json
    if path.is_file() and RunPaths(run).predictions("test").is_file():
        metrics = json.loads(path.read_text())
        if "hierarchy" in metrics and metrics.get("evaluation", {}).get("split") == "test":
            return metrics
    return evaluate_run(run).metrics  # not evaluated yet (or on another split): evaluate on test now


def comparison_rows(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric, one column per run; per-rank top-1/macro-F1 first, then the hierarchy metrics."""
    ranks = list(per_rank(next(iter(metrics.values()))))
    rows = []
    for rank in ranks:
        for m in ("top1", "macro_f1"):
            rows.append({"metric": f"{rank} {m}", "better": "higher",
                         **{name: per_rank(met)[rank][m] for name, met in metrics.items()}})
    for key, better in HIERARCHY_ROWS:
        rows.append({"metric": key, "better": better,
                     **{name: met["hierarchy"].get(key) for name, met in metrics.items()}})
    for rank in ranks[:-1]:
        rows.append({"metric": f"{rank} top1 from summed finest", "better": "higher",
                     **{name: met["hierarchy"]["coarse_from_fine"][rank] for name, met in metrics.items()}})
    if all(met.get("retrieval") for met in metrics.values()):  # image runs evaluated with retrieval
        for rank in ranks:
            for m in ("precision_at_1", "map_at_r"):
                rows.append({"metric": f"{rank} {m}", "better": "higher",
                             **{name: met["retrieval"][rank][m] for name, met in metrics.items()}})
    return rows


@dataclass
class Setting:
    """One column of the comparison: a run, or the runs of one setting trained with different seeds."""

    name: str
    runs: list[Path]


def parse_setting(arg: str | Path) -> Setting:
    """``RUN``, ``RUN,RUN,...`` or ``NAME=RUN,RUN,...`` (a path that exists as written is always one run)."""
    text = str(arg)
    if Path(text).exists() or ("," not in text and "=" not in text):
        return Setting(Path(text).name, [Path(text)])
    name, _, joined = text.partition("=") if "=" in text.split(",")[0] else ("", "", text)
    runs = [Path(r) for r in joined.split(",") if r]
    if not runs:
        raise RunError(f"--compare {text}: no run folders after '='; write NAME=RUN,RUN")
    return Setting(name or _default_name(runs), runs)


def _default_name(runs: list[Path]) -> str:
    if len(runs) == 1:
        return runs[0].name
    prefix = os.path.commonprefix([r.name for r in runs])
    if all(r.name[len(prefix):][:1].isdigit() for r in runs):  # flat-seed0, flat-s1 -> flat
        prefix = re.sub(r"(seed|[-_. ]s)$", "", prefix, flags=re.IGNORECASE)
    prefix = prefix.rstrip("-_. ") or runs[0].name
    return f"{prefix} ({len(runs)} runs)"


def compare_runs(settings: Sequence[str | Path], out: str | Path, unpaired: bool = False) -> Comparison:
    """Write ``compare.csv``, ``compare.png`` and ``compare.html`` for ``settings`` (see :func:`parse_setting`)
    into ``out``. ``unpaired`` compares settings scored on different test splits of the same taxonomy (e.g. a
    random split against a grouped one): each setting's test records are resampled on their own."""
    parsed = [parse_setting(a) for a in settings]
    if len(parsed) < 2:
        raise RunError("--compare needs at least two run folders (or comma-joined groups of seeds)")
    names: list[str] = []
    for setting in parsed:
        if setting.name in names:
            setting.name = ",".join(map(str, setting.runs))
        names.append(setting.name)
    metrics = {str(run): _metrics(run) for setting in parsed for run in setting.runs}
    digests = {m["evaluation"].get("split_digest") for m in metrics.values()}
    prints = {m["evaluation"].get("store_fingerprint") for m in metrics.values()} - {None}
    _check_views(metrics)
    if unpaired:
        _check_unpaired(parsed, metrics)
    elif len(digests) > 1 or len(prints) > 1:
        raise RunError("the runs were evaluated on different test splits (" + ", ".join(
            f"{n}: {m['evaluation']['store']}" for n, m in metrics.items()) + "); compare runs of the same store, "
            "or give --unpaired to compare settings scored on different test splits")
    # the CSV keeps each seed's own value beside its setting's mean: column -> run key in ``metrics``
    seed_columns = {f"{s.name} [{r.name}]": str(r) for s in parsed if len(s.runs) > 1 for r in s.runs}
    rows = []
    for run_row in comparison_rows(metrics):
        row = {"metric": run_row["metric"], "better": run_row["better"]}
        for setting in parsed:
            values = [run_row[str(r)] for r in setting.runs]
            row[setting.name] = None if any(v is None for v in values) else sum(values) / len(values)
        row.update({col: run_row[key] for col, key in seed_columns.items()})
        rows.append(row)
    ranks = list(per_rank(next(iter(metrics.values()))))
    arrays = {s.name: [record_arrays(RunPaths(r).predictions("test"), ranks) for r in s.runs] for s in parsed}
    diff_columns = []
    for name in names[1:]:
        diffs = (unpaired_differences if unpaired else paired_differences)(arrays[names[0]], arrays[name])
        col = f"{name} - {names[0]}"
        diff_columns += [col, f"{col} low", f"{col} high"]
        for row in rows:
            d = diffs.get(row["metric"])
            row[col], row[f"{col} low"], row[f"{col} high"] = d if d else (None, None, None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "compare.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["metric", "better", *names, *diff_columns, *seed_columns])
        writer.writeheader()
        writer.writerows(rows)
    png = _plot(rows, names, out / "compare.png")
    write_text_atomic(out / "compare.html", _html(rows, names, next(iter(metrics.values())), png))
    return Comparison(rows, csv_path, png, out / "compare.html", names)


def views(metrics: dict[str, Any]) -> str:
    """How a run's evaluation saw each record: its test-time views, and those of its retrieval embeddings (one view
    where ``retrieval_setup`` predates ``tta``)."""
    seen = f"--tta {metrics['evaluation'].get('tta', 'none')}"
    if metrics.get("retrieval"):
        seen += f" (retrieval: {(metrics.get('retrieval_setup') or {}).get('tta', 'none')})"
    return seen


def _check_views(metrics: dict[str, dict[str, Any]]) -> None:
    """Runs scored with different test-time views are not compared: TTA alone moves top-1 by about a point. The
    retrieval embeddings' views count among the runs evaluated with retrieval (only they get its rows)."""
    seen = {run: views(m) for run, m in metrics.items()}
    tta = {m["evaluation"].get("tta", "none") for m in metrics.values()}
    retrieval = {(m.get("retrieval_setup") or {}).get("tta", "none") for m in metrics.values() if m.get("retrieval")}
    if len(tta) > 1 or len(retrieval) > 1:
        raise RunError("the runs were evaluated with different test-time views (" + "; ".join(
            f"{run}: {v}" for run, v in seen.items()) + "); evaluate them again with the same --tta, e.g. "
            "`taxotrain evaluate RUN --tta auto` for each")


def _check_unpaired(parsed: list[Setting], metrics: dict[str, dict[str, Any]]) -> None:
    """``--unpaired``: each setting's seeds share one test split, and every run has the same ranks."""
    for setting in parsed:
        digests = {metrics[str(r)]["evaluation"].get("split_digest") for r in setting.runs}
        if len(digests) > 1:
            raise RunError(f"--compare {setting.name}: its runs were evaluated on different test splits; the seeds "
                           "of one setting must share their test records")
    ranks = {tuple(per_rank(m)) for m in metrics.values()}
    if len(ranks) > 1:
        raise RunError("--unpaired: the runs have different ranks (" + "; ".join(map(", ".join, ranks)) + ")")


def _plot(rows: list[dict[str, Any]], names: list[str], path: Path) -> Path:
    """Left: every metric of every run. Right: each run's difference from the first with its 95% interval, signed so
    that right of 0 is better, which shows at a glance which differences the test split can tell apart."""
    shown = [r for r in rows if r["better"] == "higher" and all(r[n] is not None for n in names)]
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        axes[0].bar([j + i * width for j in range(len(shown))], [r[name] for r in shown], width, label=name)
    axes[0].set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(shown))],
                       [r["metric"] for r in shown], rotation=35, ha="right", fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("higher is better")
    axes[0].legend(fontsize=8)
    axes[0].grid(axis="y", alpha=0.3)
    ax = axes[1]
    with_ci = [r for r in rows if any(r.get(f"{n} - {names[0]}") is not None for n in names[1:])]
    step = 0.8 / max(1, len(names) - 1)
    for i, name in enumerate(names[1:], start=1):
        col = f"{name} - {names[0]}"
        ys, xs, lo, hi = [], [], [], []
        for j, r in enumerate(with_ci):
            if r.get(col) is None:
                continue
            sign = 1.0 if r["better"] == "higher" else -1.0
            a, b = sign * r[f"{col} low"], sign * r[f"{col} high"]
            ys.append(j + (i - 1) * step)
            xs.append(sign * r[col])
            lo.append(sign * r[col] - min(a, b))
            hi.append(max(a, b) - sign * r[col])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=f"C{i}", capsize=3, label=f"{name} - {names[0]}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks([j + step * (len(names) - 2) / 2 for j in range(len(with_ci))],
                  [r["metric"] for r in with_ci], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference from {names[0]} (right = better), 95% interval")
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _html(rows: list[dict[str, Any]], names: list[str], first: dict[str, Any], png: Path) -> str:
    def cell(row: dict[str, Any], name: str) -> str:
        vals = [row[n] for n in names if row[n] is not None]
        v = row[name]
        if v is None:
            return "<td>–</td>"
        best = (max if row["better"] == "higher" else min)(vals)
        style = ' style="font-weight:bold"' if v == best and len(set(vals)) > 1 else ""
        return f"<td{style}>{v:.3f}</td>"

    diffs = [f"{n} - {names[0]}" for n in names[1:]]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names) + "".join(
        f"<th>{html.escape(d)} (95% CI)</th>" for d in diffs)
    body = "".join(f"<tr><td>{html.escape(r['metric'])} ({r['better']} is better)</td>"
                   + "".join(cell(r, n) for n in names)
                   + "".join(f"<td>{html.escape(format_difference(r, d))}</td>" for d in diffs) + "</tr>" for r in rows)
    ev = first["evaluation"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>taxotrain comparison</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto }} table {{ border-collapse:
collapse }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right }} td:first-child {{ text-align:
left }}</style></head><body><h1>Does the hierarchy pay?</h1>
<p>Same test split of <code>{html.escape(str(ev['store']))}</code> ({ev['records']} records). Best value in bold.
Differences from the first run with a 95% paired bootstrap interval (2,000 resamples of the test records, and of
the seeds where a column averages several runs); * marks an interval that excludes 0.</p>
<table><tr><th>metric</th>{head}</tr>{body}</table><img src="{png.name}" alt="comparison" style="max-width:100%">
</body></html>
"""


def format_table(comparison: Comparison) -> str:
    """The comparison as a Markdown table (what the CLI prints and docs/results.md shows)."""
    names, diffs = comparison.names, comparison.differences
    cols = [*names, *(f"{d} (95% CI)" for d in diffs)]
    lines = ["| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for r in comparison.rows:
        vals = ["–" if r[n] is None else f"{r[n]:.3f}" for n in names] + [format_difference(r, d) for d in diffs]
        lines.append(f"| {r['metric']} ({r['better']} is better) | " + " | ".join(vals) + " |")
    return "\n".join(lines)
