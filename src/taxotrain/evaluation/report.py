"""``taxotrain evaluate``: score a run's best checkpoint on a split and write metrics, tables, plots and HTML."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from taxotrain.data.dataset import train_class_counts
from taxotrain.data.store import SPLITS, Store
from taxotrain.evaluation.embedding_eval import evaluate_embeddings
from taxotrain.evaluation.hierarchy import hierarchy_metrics, record_heights
from taxotrain.evaluation.metrics import confusion, evaluate_probs, per_rank, reliability
from taxotrain.evaluation.mistakes import Mistake, worst_mistakes
from taxotrain.evaluation.page import ReportInputs, baseline_top1, render_report
from taxotrain.evaluation.pixel_baseline import pixel_centroid_baseline
from taxotrain.evaluation.plots import plot_confusion, plot_curves, plot_recall_by_frequency, plot_reliability
from taxotrain.evaluation.retrieval import KNN_K
from taxotrain.files import atomic_path, write_text_atomic
from taxotrain.inference.predict import predict_loader
from taxotrain.run import LoadedRun, RunError, RunPaths, load_run, torch_threads
from taxotrain_runtime.decoding import choose_thresholds, decode, roll_up, rollup_precision


@dataclass
class EvalResult:
    """Metrics per rank and the files written."""

    metrics: dict[str, Any]
    report: Path
    files: list[Path]


def evaluate_run(run_dir: str | Path, store: str | Path | None = None, split: str = "test",
                 checkpoint: str = "best", batch_size: int | None = None, workers: int | None = None,
                 tta: str = "auto", target_precision: float = 0.9, baseline: bool = True, retrieval: bool = True,
                 knn_k: int = KNN_K, index: str = "exact") -> EvalResult:
    """Evaluate ``checkpoints/<checkpoint>.ckpt`` of ``run_dir`` on ``split`` and write the report files there.

    ``tta`` averages predictions over test-time views (image runs: ``none``, ``flip`` or ``dihedral``; ``auto`` =
    the views the run trained for). Roll-up thresholds (the deepest rank ``predict`` reports) are chosen on the val
    split so that each rank's decoded predictions reach ``target_precision``, and saved to ``rollup.json``. With
    ``baseline``, the task's reference models (the ROCKET family for signal runs, class frequency for priors) are
    fitted on the same train split and scored on ``split`` (``metrics.json`` -> ``baseline`` -> ``minirocket`` ->
    ``top1``), and image runs get the raw-pixel floor (``baseline`` -> ``pixel_centroid``,
    ``evaluation/pixel_baseline.py``). With ``retrieval``, runs of tasks that evaluate their embeddings (the image
    tasks) add retrieval of ``split`` against the train split (``knn_k`` neighbours vote in the k-NN top-1;
    ``index``: ``exact``, or the approximate ``ivf`` or ``hnsw``) and, for a store with held-out classes, few-shot
    and open-set figures (``evaluation/embedding_eval.py``).
    """
    if split not in SPLITS:
        raise RunError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    paths = RunPaths(Path(run_dir))
    run = load_run(paths.root, which=checkpoint)
    task = run.task
    st = run.open_store(store)
    indices = st.splits[split]
    if len(indices) == 0:
        raise RunError(f"{st.path} has no records in its {split} split; re-run prepare with --{split} above 0")
    tta = task.resolve_tta(tta)
    bs = batch_size or run.config.data.batch_size * 2
    nw = task.workers(workers)

    def split_probs(name: str, hide: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        return predict_loader(task, run.model, task.inference_loader(st, name, bs, nw), tta=tta, hide=hide)

    t0 = time.perf_counter()
    with torch_threads(run.config.trainer.cpu_threads):
        probs, labels, _ = split_probs(split)
    seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {}
    metrics["ranks"], rows = evaluate_probs(probs, labels, run.taxonomy)
    cfg = run.config
    train_counts = train_class_counts(st, cfg.data.hide_labels, cfg.run.seed)  # as the run's training saw them
    for row in rows:
        r = run.taxonomy.ranks.index(row["rank"])
        row["train_count"] = int(train_counts[r][run.taxonomy.names[r].index(row["class"])])
    decoded = decode(probs, run.taxonomy)
    metrics["hierarchy"] = hierarchy_metrics(decoded.labels, labels, probs, run.taxonomy)
    if len(st.splits["val"]):
        with torch_threads(run.config.trainer.cpu_threads):
            val_probs, val_labels, _ = (probs, labels, None) if split == "val" else split_probs("val")
        val_decoded = decode(val_probs, run.taxonomy)
        thresholds = choose_thresholds(val_decoded.scores, val_decoded.labels, val_labels, target_precision)
        rollup = {"target_precision": target_precision, "chosen_on": "val",
                  "thresholds": dict(zip(run.taxonomy.ranks, thresholds, strict=True))}
        write_text_atomic(paths.rollup, json.dumps(rollup, indent=2) + "\n")
        deepest, _ = roll_up(decoded, thresholds)
        metrics["hierarchy"]["rollup"] = {**rollup, "measured_on": split,
                                          **rollup_precision(decoded.labels, labels, deepest, run.taxonomy.ranks)}
    if task.metadata_components:
        with torch_threads(run.config.trainer.cpu_threads):
            metrics["metadata"] = metadata_figures(task.metadata_components, probs, labels, run.taxonomy,
                                                   lambda hide: split_probs(split, hide)[0])
    if baseline:
        baselines = task.baselines(st, split)
        if task.evaluates_retrieval:  # image inputs: the raw-pixel floor of the closed-set and few-shot figures
            baselines["pixel_centroid"] = pixel_centroid_baseline(task, st, split, cfg.run.seed, bs, nw)
        if baselines:
            metrics["baseline"] = baselines
    retrieval_hits: dict[str, np.ndarray] = {}
    if retrieval and task.evaluates_retrieval:
        figures, retrieval_hits = evaluate_embeddings(run, st, split, knn_k=knn_k, target_precision=target_precision,
                                                      batch_size=bs, workers=workers, index=index,
                                                      tta=tta)
        metrics.update(figures)
    if (fitted := fit_time(paths)) is not None:
        metrics["fit"] = fitted
    digest = hashlib.sha1(indices.tobytes() + str(st.attrs.get("created")).encode()).hexdigest()[:16]
    metrics["evaluation"] = {"split": split, "records": int(len(indices)), "checkpoint": str(run.checkpoint),
                             "tta": tta, "split_digest": digest, "store_fingerprint": st.fingerprint,
                             "store": str(st.path), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "seconds": round(seconds, 4), "records_per_s": round(len(indices) / max(seconds, 1e-9), 1),
                             "workers": nw, "batch_size": bs, "views": len(task.views(_probe(task), tta))}

    files = [_write_json(paths.metrics_json, metrics), _write_per_class(paths.per_class, rows),
             _write_predictions(paths.predictions(split), probs, labels, decoded.labels, indices,
                                record_heights(decoded.labels, labels, run.taxonomy), retrieval_hits)]
    cms = [confusion(probs[rank], labels[:, r]) for r, rank in enumerate(run.taxonomy.ranks)]
    confusions = [plot_confusion(cm, run.taxonomy, r, paths.root / f"confusion_{rank}.png")
                  for r, (rank, cm) in enumerate(zip(run.taxonomy.ranks, cms, strict=True))]
    curves = plot_curves(paths.metrics_csv, run.taxonomy.ranks, paths.root)
    curves.append(plot_reliability({rank: reliability(probs[rank], labels[:, r])
                                    for r, rank in enumerate(run.taxonomy.ranks)},
                                   {rank: m.get("ece") for rank, m in per_rank(metrics).items()},
                                   paths.root / "reliability.png"))
    curves.append(plot_recall_by_frequency(rows, run.taxonomy.ranks, paths.root / "recall_by_frequency.png"))
    files += confusions + curves
    mistakes = _gallery(run, st, decoded.labels, labels, probs, indices)
    report = _write_html(paths, run, metrics, rows, cms, curves + confusions, mistakes)
    return EvalResult(metrics, report, files + [report])


def metadata_figures(components: tuple[str, ...], probs: dict[str, np.ndarray], labels: np.ndarray,
                     taxonomy: Any, predict: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Top-1, top-5 and macro-F1 per rank of a run with place/date metadata: with all of it (``all``: ``probs``),
    with none (``none``) and with each component missing alone (``<component>_masked``); ``predict(hidden)`` gives
    the probabilities with the components ``hidden`` missing."""
    variants = {"all": (), "none": components, **{f"{c}_masked": (c,) for c in components}}
    found: dict[tuple[str, ...], dict[str, np.ndarray]] = {(): probs}
    out = {}
    for name, hidden in variants.items():
        key = tuple(sorted(hidden))
        if key not in found:
            found[key] = predict(hidden)
        scores = evaluate_probs(found[key], labels, taxonomy)[0]
        out[name] = {rank: {k: m[k] for k in ("top1", "top5", "macro_f1", "n")} for rank, m in scores.items()}
    return out


def _write_json(path: Path, metrics: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")


def _write_predictions(path: Path, probs: dict[str, np.ndarray], labels: np.ndarray, decoded: np.ndarray,
                       indices: np.ndarray, heights: np.ndarray,
                       retrieval_hits: dict[str, np.ndarray] | None = None) -> Path:
    """Per-record arrays that ``--compare`` resamples for its confidence intervals: with retrieval, also
    ``retrieval_<rank>`` (1/0 whether the nearest train record shares the label, NaN when unscored), in the same
    record order as ``indices``."""
    extra = {f"retrieval_{rank}": h.astype(np.float32) for rank, h in (retrieval_hits or {}).items()}
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, labels=labels, decoded=decoded, indices=indices, heights=heights, **extra,
                            **{f"probs_{rank}": p.astype(np.float32) for rank, p in probs.items()})
    return path


def _write_per_class(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "class", "precision", "recall", "f1", "support",
                                                "train_count"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _gallery(run: LoadedRun, st: Store, decoded: np.ndarray, labels: np.ndarray, probs: dict[str, np.ndarray],
             indices: np.ndarray) -> list[Mistake]:
    mistakes = worst_mistakes(decoded, labels, probs[run.taxonomy.finest], indices, run.taxonomy)
    for m in mistakes:
        m.thumbnail = run.task.thumbnail(st, m.index)
    return mistakes


def _write_html(paths: RunPaths, run: LoadedRun, metrics: dict[str, Any], rows: list[dict[str, Any]],
                confusions: list[np.ndarray], figures: list[Path], mistakes: list[Mistake]) -> Path:
    inputs = ReportInputs(name=paths.root.name, backbone=run.config.model.backbone, inputs=run.task.describe_input(),
                          metrics=metrics, taxonomy=run.taxonomy, rows=rows, confusions=confusions, figures=figures,
                          mistakes=mistakes)
    return write_text_atomic(paths.report, render_report(inputs))


def fit_time(paths: RunPaths) -> dict[str, Any] | None:
    """The run's training time from its ``metrics.csv``: seconds summed over epochs (start-up excluded), epochs;
    for a ``model.backbone: auto`` run also the seconds its choice took (``selection.json``) and what it chose."""
    if not paths.metrics_csv.is_file():
        return None
    with paths.metrics_csv.open(newline="") as fh:
        seconds = [float(r["seconds"]) for r in csv.DictReader(fh) if r.get("seconds")]
    if not seconds:
        return None
    fitted: dict[str, Any] = {"seconds": round(sum(seconds), 2), "epochs": len(seconds)}
    if paths.selection.is_file():
        selection = json.loads(paths.selection.read_text())
        fitted["chosen"] = selection["chosen"]
        fitted["selection_seconds"] = round(sum(c["seconds"] for c in selection["candidates"]  # mean's = members'
                                                if c["backbone"] != "mean"), 2)
    return fitted


def summary_line(result: EvalResult) -> str:
    """One line per rank: top-1 and macro-F1; then the finest rank's top-1 without metadata, the baselines' top-1
    and the finest rank's retrieval."""
    parts = [f"{r} top1 {m['top1']:.3f} macro-F1 {m['macro_f1']:.3f}" for r, m in per_rank(result.metrics).items()
             if m.get("top1") is not None]
    finest = list(per_rank(result.metrics))[-1] if per_rank(result.metrics) else ""
    none = ((result.metrics.get("metadata") or {}).get("none") or {}).get(finest) or {}
    if none.get("top1") is not None:
        parts.append(f"{finest} top1 without metadata {none['top1']:.3f}")
    baselines = result.metrics.get("baseline") or {}
    scored = [f"{b.get('name', k)} {top1:.3f}" for k, b in baselines.items()
              if (top1 := baseline_top1(b, finest)) is not None]
    if scored:
        parts.append("baselines top1 " + ", ".join(scored))
    retrieval = result.metrics.get("retrieval") or {}
    fine = retrieval[list(retrieval)[-1]] if retrieval else {}  # ranks coarse to fine
    if fine.get("precision_at_1") is not None:
        parts.append(f"retrieval P@1 {fine['precision_at_1']:.3f} MAP@R {fine['map_at_r']:.3f}")
    parts += [f"{b.get('name', k)} skipped: {b['skipped']}" for k, b in baselines.items() if b.get("skipped")]
    ev = result.metrics.get("evaluation") or {}
    if ev.get("records_per_s"):
        parts.append(f"{ev['records']} records in {_seconds(ev['seconds'])} s ({ev['records_per_s']:.0f}/s, "
                     f"{ev['workers']} worker(s), {ev['views']} view(s) each)")
    return "; ".join(parts) + f"; report {result.report}"


def _seconds(value: float) -> str:
    """``0.0541`` -> ``0.0541``, ``1234.5`` -> ``1234.5``: short for quick passes, no exponent for long ones."""
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def _probe(task: Any) -> Any:
    """One example input of ``task``, to count its test-time views."""
    return task.example_input(1)


__all__ = ["EvalResult", "evaluate_run", "summary_line"]
