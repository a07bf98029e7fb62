"""The study report: ``best_params.yaml``, ``trials.csv``, ``study.json``, plots and ``study.html``.

``best_params.yaml`` holds the best trial's searched values as nested config sections, so it is what
``taxotrain fit --config cfg.yaml --params best_params.yaml`` takes.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from taxotrain.config import Config, nested
from taxotrain.errors import brief
from taxotrain.files import atomic_path, write_text_atomic

PLOTS = ("optimization_history", "param_importances", "intermediate_values")


def _epochs(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("epochs", len(t.intermediate_values)))


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


def summary(study: optuna.Study, cfg: Config) -> dict[str, Any]:
    """Trials by state, epochs spent against the trials x epochs budget, and the best trial (``study.json``)."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best = _best(study)
    metric = next((t.user_attrs["metric"] for t in trials if "metric" in t.user_attrs), cfg.tune.metric)
    return {
        "study": study.study_name, "strategy": cfg.tune.strategy, "metric": metric,
        "direction": study.direction.name.lower(), "max_trials": cfg.tune.max_trials,
        "max_epochs_per_trial": cfg.tune.max_epochs_per_trial, "states": states,
        "epochs_spent": sum(_epochs(t) for t in trials),
        "epochs_if_unpruned": len(finished) * cfg.tune.max_epochs_per_trial,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                           "run_dir": best.user_attrs.get("run_dir")},
    }


def _value(v: Any) -> Any:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """One row per trial: number, state, value, epochs, seconds, peak memory of the trial process, one column per
    searched key, run_dir, note."""
    trials = study.get_trials(deepcopy=False)
    params = {t.number: t.params or t.system_attrs.get("fixed_params", {}) for t in trials}  # queued: fixed params
    keys = list(dict.fromkeys(k for p in params.values() for k in p))
    columns = ["number", "state", "value", "epochs", "seconds", "max_rss_mb", "trial_pid", *keys, "run_dir", "note"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for t in trials:
        note = t.user_attrs.get("error", "")
        if "retry_of" in t.user_attrs:
            note = f"retry of trial {t.user_attrs['retry_of']}" + (f"; {note}" if note else "")
        writer.writerow({"number": t.number, "state": t.state.name, "value": _value(t.value), "epochs": _epochs(t),
                         "seconds": t.user_attrs.get("seconds", ""), "max_rss_mb": t.user_attrs.get("max_rss_mb", ""),
                         "trial_pid": t.user_attrs.get("pid_trial", ""),
                         **{k: params[t.number].get(k, "") for k in keys},
                         "run_dir": t.user_attrs.get("run_dir", ""), "note": note})
    return write_text_atomic(path, buf.getvalue())


def write_best_params(study: optuna.Study, cfg: Config, path: Path) -> Path | None:
    """The best trial's values as nested YAML with a comment saying where they came from; None before any."""
    best = _best(study)
    if best is None:
        return None
    metric = best.user_attrs.get("metric", cfg.tune.metric)
    head = (f"# best of study '{study.study_name}' ({cfg.tune.strategy}): trial {best.number}, {metric} = "
            f"{best.value:.6g} after {_epochs(best)} epoch(s)\n# run folder: {best.user_attrs.get('run_dir')}\n"
            f"# use: taxotrain fit --config CONFIG.yaml --params {path} trainer.max_epochs=N run.dir=runs/final\n")
    return write_text_atomic(path, head + yaml.safe_dump(nested(best.params), sort_keys=False))


def write_plots(study: optuna.Study, out: Path, seed: int = 0) -> dict[str, Path | str]:
    """PNG plots of the optimisation history, parameter importances and per-epoch values; a reason for each one
    that cannot be drawn yet (e.g. importances need two complete trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varied = {k for k in study.get_trials(deepcopy=False)[0].params} if study.trials else set()
    made: dict[str, Path | str] = {}
    jobs = {
        "optimization_history": (lambda: ovm.plot_optimization_history(study), "needs one complete trial", 1),
        "param_importances": (lambda: ovm.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)),
            "needs two complete trials and two searched keys", 2 if len(varied) > 1 else math.inf),
        "intermediate_values": (lambda: ovm.plot_intermediate_values(study), "needs one reported epoch", 1),
    }
    for name, (draw, why, need) in jobs.items():
        if len(complete) < need:
            made[name] = why
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                with atomic_path(out / f"{name}.png") as tmp:
                    fig.savefig(tmp, dpi=110, format="png")
                plt.close(fig)
            made[name] = out / f"{name}.png"
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. all values equal: no importances
            made[name] = f"not drawn: {brief(exc, 120)}"
            plt.close("all")
    return made


def write_html(summary_: dict[str, Any], trials_csv: Path, plots: dict[str, Path | str], path: Path) -> Path:
    """A one-page report: the summary, the plots and the trials table."""
    with trials_csv.open(newline="") as fh:
        rows = list(csv.reader(fh))
    table = "".join("<tr>" + "".join(f"<t{'h' if i == 0 else 'd'}>{html.escape(c)}</t{'h' if i == 0 else 'd'}>"
                                     for c in row) + "</tr>" for i, row in enumerate(rows))
    imgs = "".join(f'<h3>{n.replace("_", " ")}</h3><img src="{p.name}">' if isinstance(p, Path)
                   else f"<h3>{n.replace('_', ' ')}</h3><p>{html.escape(p)}</p>" for n, p in plots.items())
    best = summary_["best"]
    best_txt = (f"trial {best['number']}: {summary_['metric']} = {best['value']:.4f} with "
                + ", ".join(f"<code>{html.escape(k)}={html.escape(str(v))}</code>" for k, v in best["params"].items())
                if best else "no complete trial yet")
    page = (f"<!doctype html><meta charset=utf-8><title>study {html.escape(summary_['study'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
            "font-size:13px}img{max-width:700px}</style>"
            f"<h1>Study {html.escape(summary_['study'])}</h1><p>{summary_['strategy']}, "
            f"{summary_['direction']} {html.escape(summary_['metric'])}; trials: "
            + ", ".join(f"{n} {s}" for s, n in summary_["states"].items())
            + f"; epochs spent {summary_['epochs_spent']} (unpruned: {summary_['epochs_if_unpruned']})</p>"
            f"<p>Best: {best_txt}</p>{imgs}<h2>Trials</h2><table>{table}</table>")
    return write_text_atomic(path, page)


def write_report(study: optuna.Study, cfg: Config, light: bool = False) -> dict[str, Path]:
    """Write the study report into ``cfg.run.dir``; ``light`` skips the plots (used after every trial)."""
    out = Path(cfg.run.dir)
    files: dict[str, Path] = {"trials": write_trials_csv(study, out / "trials.csv")}
    best = write_best_params(study, cfg, out / "best_params.yaml")
    if best is not None:
        files["best_params"] = best
    s = summary(study, cfg)
    files["summary"] = write_text_atomic(out / "study.json", json.dumps(s, indent=1, default=str))
    if not light:
        plots = write_plots(study, out, cfg.tune.seed)
        files.update({k: v for k, v in plots.items() if isinstance(v, Path)})
        files["html"] = write_html(s, files["trials"], plots, out / "study.html")
    return files
