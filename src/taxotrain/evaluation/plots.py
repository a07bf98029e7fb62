"""Report figures: normalised confusion matrices in taxonomy order, and training curves from ``metrics.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taxotrain.taxonomy import Taxonomy  # noqa: E402


def plot_confusion(cm: np.ndarray, taxonomy: Taxonomy, rank: int, path: Path) -> Path:
    """Row-normalised confusion matrix; classes in taxonomy order with lines between coarser-rank groups.

    Readable at 100+ classes: the figure and font scale with the class count, and empty rows stay blank.
    """
    names = taxonomy.names[rank]
    n = len(names)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = min(40.0, max(5.0, 0.16 * n + 3))
    font = max(3.0, min(9.0, 400 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(side, side * 0.92))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if rank > 0:  # separate the coarsest rank's groups, so blocks on the diagonal are taxa
        groups = taxonomy.ancestors[rank][:, 0]
        for b in np.flatnonzero(groups[1:] != groups[:-1]) + 0.5:
            ax.axhline(b, color="white", lw=0.4)
            ax.axvline(b, color="white", lw=0.4)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=font,
                            color="black" if norm[i, j] > 0.5 else "white")
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of true class")
    ax.set_title(f"{taxonomy.ranks[rank]}: confusion matrix (rows normalised, taxonomy order)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as floats (empty cells become NaN)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()}
                for r in csv.DictReader(fh)]


def plot_curves(metrics_csv: Path, ranks: list[str], out_dir: Path) -> list[Path]:
    """``curves_loss.png`` (train and val loss) and ``curves_accuracy.png`` (val top-1 and macro-F1 per rank)."""
    rows = read_metrics_csv(metrics_csv)
    if not rows:
        return []
    epochs = [r["epoch"] + 1 for r in rows]
    out = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss", "train"), ("val/loss", "val")):
        if key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (sum over ranks)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append(out_dir / "curves_loss.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("top1", "macro_f1"), strict=True):
        for rank in ranks:
            key = f"val/{rank}/{metric}"
            if key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], marker="o", label=rank)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {metric}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.append(out_dir / "curves_accuracy.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)
    return out
