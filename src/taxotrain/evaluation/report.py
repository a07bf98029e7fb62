"""``taxotrain evaluate``: score a run's best checkpoint on a split and write metrics, tables, plots and HTML."""

from __future__ import annotations

import csv
import hashlib
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from taxotrain.config import ConfigError
from taxotrain.data.store import SPLITS, Store
from taxotrain.evaluation.hierarchy import hierarchy_metrics, record_heights
from taxotrain.evaluation.metrics import confusion, evaluate_probs, per_rank
from taxotrain.evaluation.plots import plot_confusion, plot_curves
from taxotrain.files import atomic_path, write_text_atomic
from taxotrain.inference.predict import predict_loader
from taxotrain.run import LoadedRun, RunError, RunPaths, load_run, torch_threads
from taxotrain.tasks.decoding import choose_thresholds, decode, roll_up, rollup_precision


@dataclass
class EvalResult:
    """Metrics per rank and the files written."""

    metrics: dict[str, Any]
    report: Path
    files: list[Path]


def _store_for(run: LoadedRun, store: str | Path | None) -> Store:
    candidates = [store] if store else [run.config.data.store, run.store]
    for c in candidates:
        if c and Path(c).is_file():
            return Store(c)
    raise RunError(f"the store this run was trained on ({run.config.data.store}) is not there; pass --store PATH")


def evaluate_run(run_dir: str | Path, store: str | Path | None = None, split: str = "test",
                 checkpoint: str = "best", batch_size: int | None = None, workers: int | None = None,
                 tta: str = "auto", target_precision: float = 0.9, baseline: bool = True) -> EvalResult:
    """Evaluate ``checkpoints/<checkpoint>.ckpt`` of ``run_dir`` on ``split`` and write the report files there.

    ``tta`` averages predictions over test-time views (image runs: ``none``, ``flip`` or ``dihedral``; ``auto`` =
    the views the run trained for). Roll-up thresholds (the deepest rank ``predict`` reports) are chosen on the val
    split so that each rank's decoded predictions reach ``target_precision``, and saved to ``rollup.json``. With
    ``baseline``, the task's reference models (MiniRocket for signal runs) are fitted on the same train split and
    scored on ``split`` (``metrics.json`` -> ``baseline`` -> ``minirocket`` -> ``top1``).
    """
    if split not in SPLITS:
        raise RunError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    paths = RunPaths(Path(run_dir))
    run = load_run(paths.root, which=checkpoint)
    task = run.task
    st = _store_for(run, store)
    try:
        task.check_store(st)
    except ConfigError as exc:
        raise RunError(f"{exc}; pass the run's own store with --store") from exc
    if run.store_fingerprint and st.fingerprint != run.store_fingerprint:
        raise RunError(f"{st.path} is not the store {paths.root} was trained on: its records or split changed since "
                       "(was it prepared again?), so its test split may hold training records; evaluate on the run's "
                       "own store with --store, or train again on this one")
    if st.taxonomy.to_dict() != run.taxonomy.to_dict():
        raise RunError(f"{st.path} has a different taxonomy from the one {paths.root} was trained on; pass the "
                       "run's own store with --store")
    indices = st.splits[split]
    if len(indices) == 0:
        raise RunError(f"{st.path} has no records in its {split} split; re-run prepare with --{split} above 0")
    tta = task.resolve_tta(tta)
    bs = batch_size or run.config.data.batch_size * 2
    nw = task.workers(workers)

    def split_probs(name: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        loader = DataLoader(task.dataset(st, name), batch_size=bs, shuffle=False, num_workers=nw)
        return predict_loader(task, run.model, loader, tta=tta)

    with torch_threads(run.config.trainer.cpu_threads):
        probs, labels, _ = split_probs(split)
    metrics: dict[str, Any] = {}
    metrics["ranks"], rows = evaluate_probs(probs, labels, run.taxonomy)
    decoded = decode(probs, run.taxonomy)
    metrics["hierarchy"] = hierarchy_metrics(decoded.labels, labels, probs, run.taxonomy)
    if len(st.splits["val"]):
        with torch_threads(run.config.trainer.cpu_threads):
            val_probs, val_labels, _ = (probs, labels, None) if split == "val" else split_probs("val")
        val_decoded = decode(val_probs, run.taxonomy)
        thresholds = choose_thresholds(val_decoded.scores, val_decoded.labels, val_labels, target_precision)
        rollup = {"target_precision": target_precision, "chosen_on": "val",
                  "thresholds": dict(zip(run.taxonomy.ranks, thresholds, strict=True))}
        write_text_atomic(paths.root / "rollup.json", json.dumps(rollup, indent=2) + "\n")
        deepest, _ = roll_up(decoded, thresholds)
        metrics["hierarchy"]["rollup"] = {**rollup, "measured_on": split,
                                          **rollup_precision(decoded.labels, labels, deepest, run.taxonomy.ranks)}
    if baseline:
        baselines = task.baselines(st, split)
        if baselines:
            metrics["baseline"] = baselines
    digest = hashlib.sha1(indices.tobytes() + str(st.attrs.get("created")).encode()).hexdigest()[:16]
    metrics["evaluation"] = {"split": split, "records": int(len(indices)), "checkpoint": str(run.checkpoint),
                             "tta": tta, "split_digest": digest, "store_fingerprint": st.fingerprint,
                             "store": str(st.path), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    files = [_write_json(paths.metrics_json, metrics), _write_per_class(paths.per_class, rows),
             _write_predictions(paths.predictions(split), probs, labels, decoded.labels, indices,
                                record_heights(decoded.labels, labels, run.taxonomy))]
    confusions = []
    for r, rank in enumerate(run.taxonomy.ranks):
        cm = confusion(probs[rank], labels[:, r])
        confusions.append(plot_confusion(cm, run.taxonomy, r, paths.root / f"confusion_{rank}.png"))
    curves = plot_curves(paths.metrics_csv, run.taxonomy.ranks, paths.root)
    files += confusions + curves
    report = _write_html(paths, run, metrics, rows, confusions, curves)
    return EvalResult(metrics, report, files + [report])


def _write_json(path: Path, metrics: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")


def _write_predictions(path: Path, probs: dict[str, np.ndarray], labels: np.ndarray, decoded: np.ndarray,
                       indices: np.ndarray, heights: np.ndarray) -> Path:
    """Per-record arrays that ``--compare`` resamples for its confidence intervals."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, labels=labels, decoded=decoded, indices=indices, heights=heights,
                            **{f"probs_{rank}": p.astype(np.float32) for rank, p in probs.items()})
    return path


def _write_per_class(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _write_html(paths: RunPaths, run: LoadedRun, metrics: dict[str, Any], rows: list[dict[str, Any]],
                confusions: list[Path], curves: list[Path]) -> Path:
    ranks = run.taxonomy.ranks
    ev = metrics["evaluation"]
    cfg = run.config
    head = "".join(f"<th>{k}</th>" for k in ("rank", "classes", "records", "top-1", "top-5", "macro-F1",
                                             "balanced acc."))
    scores = metrics["ranks"]
    body = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{len(run.taxonomy.names[i])}</td><td>{scores[r]['n']}</td>"
        + "".join(f"<td>{_fmt(scores[r][k])}</td>" for k in ("top1", "top5", "macro_f1", "balanced_accuracy"))
        + "</tr>" for i, r in enumerate(ranks))
    per_class = "".join(
        f"<tr><td>{html.escape(x['rank'])}</td><td>{html.escape(x['class'])}</td><td>{x['precision']:.3f}</td>"
        f"<td>{x['recall']:.3f}</td><td>{x['f1']:.3f}</td><td>{x['support']}</td></tr>" for x in rows)
    imgs = "".join(f'<figure><img src="{p.name}" alt="{p.stem}"><figcaption>{p.stem}</figcaption></figure>'
                   for p in curves + confusions)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taxotrain report: {html.escape(paths.root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222 }}
table {{ border-collapse: collapse; margin: 1em 0 }} td, th {{ border: 1px solid #ccc; padding: 3px 8px;
text-align: right }} td:first-child, td:nth-child(2) {{ text-align: left }} th {{ background: #f0f0f0 }}
img {{ max-width: 100% }} figure {{ margin: 1em 0 }} .meta {{ color: #555 }}
details {{ margin: 1em 0 }}
</style></head><body>
<h1>taxotrain report: {html.escape(paths.root.name)}</h1>
<p class="meta">{html.escape(ev['split'])} split of <code>{html.escape(ev['store'])}</code>, {ev['records']} records;
checkpoint <code>{html.escape(ev['checkpoint'])}</code>; test-time augmentation: {html.escape(ev['tta'])};
backbone <code>{html.escape(cfg.model.backbone)}</code> on {html.escape(run.task.describe_input())};
evaluated {html.escape(ev['date'])}.</p>
<h2>Metrics per rank</h2>
<table><tr>{head}</tr>{body}</table>
{_baseline_html(metrics, ranks)}
<p class="meta">Fractions. Records unknown at a rank are left out of that rank. Files:
<a href="metrics.json">metrics.json</a>, <a href="per_class.csv">per_class.csv</a>,
<a href="metrics.csv">metrics.csv</a> (per epoch), <a href="config.yaml">config.yaml</a>.</p>
{_hierarchy_html(metrics, ranks)}
<h2>Training curves and confusion matrices</h2>
{imgs}
<h2>Per class</h2>
<details><summary>precision, recall, F1 and support of every class at every rank</summary>
<table><tr><th>rank</th><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{per_class}</table></details>
</body></html>
"""
    return write_text_atomic(paths.report, page)


def _baseline_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    baselines = metrics.get("baseline") or {}
    if not baselines:
        return ""
    rows = "".join(f"<tr><td>{html.escape(b['method'])}</td><td>{_fmt(b['top1'])}</td><td>{b['seconds']:.1f}</td>"
                   f"<td>{b['train_records']}</td></tr>" for b in baselines.values())
    return (f"<h2>Baseline</h2><table><tr><th>model</th><th>top-1</th><th>fit + predict (s)</th>"
            f"<th>train records</th></tr><tr><td>this run</td><td>{_fmt(metrics['ranks'][ranks[-1]]['top1'])}</td>"
            f"<td>–</td><td>–</td></tr>{rows}</table><p class=\"meta\">Fitted on the same train split as the run "
            "and scored on the same records.</p>")


def _hierarchy_html(metrics: dict[str, Any], ranks: list[str]) -> str:
    h = metrics.get("hierarchy")
    if not h or len(ranks) < 2:  # one rank (e.g. a signal set's class): nothing hierarchical to show
        return ""
    keys = ["chain_accuracy", "partial_chain_accuracy", "mistake_severity", "mistake_tree_distance",
            "hierarchical_distance_at_1", "hierarchical_precision", "hierarchical_recall", "hierarchical_f1"]
    first = "".join(f"<tr><td>{k.replace('_', ' ')}</td><td>{_fmt(h.get(k))}</td></tr>" for k in keys)
    per_rank = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{_fmt(metrics['ranks'][r]['top1'])}</td>"
        f"<td>{_fmt(h['decoded_top1'][r])}</td>"
        f"<td>{_fmt(h['coarse_from_fine'].get(r))}</td></tr>" for r in ranks)
    roll = h.get("rollup")
    roll_txt = ""
    if roll:
        at = ", ".join(f"{r} {v:.1%}" for r, v in roll["reported_at"].items())
        roll_txt = (f"<p class=\"meta\">Roll-up (target precision {roll['target_precision']:.0%}, thresholds chosen "
                    f"on val): reported at {at}; precision at the reported rank "
                    f"{_fmt(roll['precision_at_reported_rank'])}.</p>")
    return (f"<h2>Does the hierarchy pay?</h2>\n<table>{first}</table><table><tr><th>rank</th><th>head top-1</th>"
            "<th>consistent path top-1</th>"
            f"<th>finest head summed to this rank</th></tr>{per_rank}</table>{roll_txt}"
            "<p class=\"meta\">Mistake severity: mean number of ranks up to the common ancestor of a wrong finest "
            "prediction and the truth (1 = sibling); hierarchical distance at 1 averages that height over all "
            "records, right ones counting 0. Hierarchical P/R/F1 count every node on the predicted and true "
            "paths (Kiritchenko et al.).</p>")


def summary_line(result: EvalResult) -> str:
    """One line per rank: top-1 and macro-F1."""
    parts = [f"{r} top1 {m['top1']:.3f} macro-F1 {m['macro_f1']:.3f}" for r, m in per_rank(result.metrics).items()
             if m.get("top1") is not None]
    for name, base in (result.metrics.get("baseline") or {}).items():
        parts.append(f"{base.get('name', name)} baseline top1 {base['top1']:.3f}")
    return "; ".join(parts) + f"; report {result.report}"


__all__ = ["EvalResult", "evaluate_run", "summary_line"]
