"""The "Does the margin loss pay?" table of docs/results.md, from evaluated run folders.

Usage: python tools/margin_table.py --ce CE_0 CE_1 CE_2 --margin M_0 M_1 M_2 [--name cosface]

Each run must have been evaluated on its test split with retrieval (``taxotrain evaluate RUN --tta none``), on one
store (the same test records). Prints, per rank, the mean over seeds (and each seed) of: the classifier's top-1, the
retrieval precision@1 and MAP@R of both models' embeddings, the raw-pixel floor (nearest class mean), and on a store
with held-out classes the leave-one-out precision@1 and 1-/5-shot accuracy of both and of the floor; then the
differences that the issue asks about with 95% bootstrap intervals that resample the test records and the seeds
(``taxotrain.evaluation.intervals``): margin precision@1 - CE top-1 and margin - CE precision@1. Few-shot figures are
means over seeds of means over 5 seeded draws, shown with their spread over seeds (no record-level interval).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from taxotrain.evaluation.intervals import paired_differences, record_arrays


def _load(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _mean(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "–"
    spread = f" ± {np.std(got):.3f}" if len(got) > 1 else ""
    return f"{np.mean(got):.3f}{spread}"


def _interval(d: tuple[float, float, float]) -> str:
    star = "**" if d[1] > 0 or d[2] < 0 else ""
    return f"{star}{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]{star}"


def table(ce: list[Path], margin: list[Path], name: str) -> str:
    """The markdown of the module docstring."""
    m_ce, m_mg = [_load(r) for r in ce], [_load(r) for r in margin]
    ranks = list(m_ce[0]["ranks"])
    lines = [f"| rank | CE top-1 | CE P@1 | {name} P@1 | CE MAP@R | {name} MAP@R | raw pixels (nearest class mean) | "
             f"{name} P@1 − CE top-1 | {name} P@1 − CE P@1 |", "| --- " * 9 + "|"]
    arr_ce = [record_arrays(r / "predictions_test.npz", ranks) for r in ce]
    arr_mg = [record_arrays(r / "predictions_test.npz", ranks) for r in margin]
    for rank in ranks:
        # the classifier's top-1 set against the margin model's precision@1: one statistic under one name
        base = [{"indices": a["indices"], "x": a[f"{rank} top1"], "heights": a["heights"]} for a in arr_ce]
        other = [{"indices": a["indices"], "x": a[f"{rank} precision_at_1"], "heights": a["heights"]} for a in arr_mg]
        vs_top1 = paired_differences(_renamed(base), _renamed(other))["x top1"]
        vs_p1 = paired_differences(arr_ce, arr_mg)[f"{rank} precision_at_1"]
        floor = [m["baseline"]["pixel_centroid"][rank]["top1"] for m in m_ce]
        lines.append(
            f"| {rank} | {_mean([m['ranks'][rank]['top1'] for m in m_ce])} | "
            f"{_mean([m['retrieval'][rank]['precision_at_1'] for m in m_ce])} | "
            f"{_mean([m['retrieval'][rank]['precision_at_1'] for m in m_mg])} | "
            f"{_mean([m['retrieval'][rank]['map_at_r'] for m in m_ce])} | "
            f"{_mean([m['retrieval'][rank]['map_at_r'] for m in m_mg])} | {_mean(floor)} | "
            f"{_interval(vs_top1)} | {_interval(vs_p1)} |")
    if "heldout" in m_ce[0]:
        lines += ["", f"| held-out rank | classes | CE LOO P@1 | {name} LOO P@1 | floor LOO P@1 | CE 1-shot | "
                  f"{name} 1-shot | floor 1-shot | CE 5-shot | {name} 5-shot | floor 5-shot |", "| --- " * 11 + "|"]
        for rank, row in m_ce[0]["heldout"].items():
            if not row.get("classes"):
                continue
            cells = [rank, str(row["classes"])]
            for key in ("loo_precision_at_1", "fewshot_1", "fewshot_5"):
                cells += [_mean([m["heldout"][rank][key] for m in m_ce]),
                          _mean([m["heldout"][rank][key] for m in m_mg]),
                          _mean([m["baseline"]["pixel_centroid"]["heldout"][rank][key] for m in m_ce])]
            lines.append("| " + " | ".join(cells) + " |")
        opened = [(m["openset"]["auroc"], m["openset"]["accuracy"]) for m in m_mg]
        opened_ce = [(m["openset"]["auroc"], m["openset"]["accuracy"]) for m in m_ce]
        lines += ["", f"Open set (known test records against held-out ones, by the top cosine to the train split): "
                  f"AUROC CE {_mean([a for a, _ in opened_ce])}, {name} {_mean([a for a, _ in opened])}; "
                  f"open-set accuracy at the threshold chosen on val CE {_mean([b for _, b in opened_ce])}, "
                  f"{name} {_mean([b for _, b in opened])}."]
    return "\n".join(lines)


def _renamed(runs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{"indices": r["indices"], "x top1": r["x"], "chain_accuracy": r["x"], "heights": r["heights"]}
            for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ce", type=Path, nargs="+", required=True, help="the cross-entropy runs (seeds)")
    parser.add_argument("--margin", type=Path, nargs="+", required=True, help="the margin-loss runs (seeds)")
    parser.add_argument("--name", default="margin", help="the margin model's column name")
    args = parser.parse_args()
    print(table(args.ce, args.margin, args.name))


if __name__ == "__main__":
    main()
