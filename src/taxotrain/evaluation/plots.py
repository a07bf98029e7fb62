"""Report figures: confusion matrices in taxonomy order, and training curves from ``metrics.csv``.

Every figure uses matplotlib's constrained layout and shrinks a title that would not fit its canvas, so no text is
cut off at the edge; a confusion matrix writes numbers in its cells only where they fit inside the cell.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from taxotrain.taxonomy import Taxonomy  # noqa: E402

CELL_FONT_MIN = 5.0  # points: smaller cell numbers cannot be read, so the cells stay blank


def _fit_text(fig: Figure, text: Text, smallest: float = 6.0) -> None:
    """Shrink ``text`` until it lies inside the figure's width (it is centred, so equal margins)."""
    renderer = fig.canvas.get_renderer()
    while text.get_fontsize() > smallest:
        box = text.get_window_extent(renderer)
        if box.x0 >= fig.bbox.x0 and box.x1 <= fig.bbox.x1:
            return
        text.set_fontsize(text.get_fontsize() - 0.5)


def _normalise(cm: np.ndarray) -> np.ndarray:
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)


def _cell_strings(cm: np.ndarray, norm: np.ndarray) -> dict[tuple[int, int], str]:
    """Fraction of the true class over the count, for every non-empty cell."""
    out = {}
    for i, j in zip(*np.nonzero(cm), strict=True):
        frac = "<.01" if norm[i, j] < 0.005 else f"{norm[i, j]:.2f}"
        out[int(i), int(j)] = f"{frac}\n{int(cm[i, j])}"
    return out


def _annotate_cells(fig: Figure, ax: Axes, cm: np.ndarray, norm: np.ndarray) -> bool:
    """Write each non-empty cell's fraction and count at the largest font that fits its cell; write nothing (and
    return False) when that font would be under ``CELL_FONT_MIN``."""
    cells = _cell_strings(cm, norm)
    if not cells:
        return False
    fig.draw_without_rendering()  # run the layout, so the axes has its final size
    cell_pt = ax.get_window_extent().width / cm.shape[1] / fig.dpi * 72
    widest = max(len(line) for s in cells.values() for line in s.split("\n"))
    # digits are about 0.6 em wide and two lines about 2.4 em tall; keep a tenth of the cell as margin
    font = min(10.0, 0.85 * cell_pt / (0.62 * widest), 0.85 * cell_pt / 2.4)
    if font < CELL_FONT_MIN:
        return False
    for (i, j), label in cells.items():
        ax.text(j, i, label, ha="center", va="center", fontsize=font, linespacing=1.0, in_layout=False,
                color="black" if norm[i, j] > 0.5 else "white", gid="cell")
    return True


def confusion_figure(cm: np.ndarray, taxonomy: Taxonomy, rank: int) -> Figure:
    """Row-normalised confusion matrix (counts in the cells where they fit), classes in taxonomy order with lines
    between the coarsest rank's groups. Cells, and so the figure, grow with the class count; class names are set
    at a font that fits one row's pitch, so a 121-class matrix is readable at full size."""
    names = taxonomy.names[rank]
    n = len(names)
    norm = _normalise(cm)
    cell = float(np.clip(12 / max(n, 1), 0.16, 0.45))  # inches per class
    tick = min(9.0, 0.7 * cell * 72)
    names_in = max(map(len, names)) * 0.6 * tick / 72 + 0.4
    width = max(5.0, n * cell + names_in + 1.6)
    fig = plt.figure(figsize=(width, max(4.0, n * cell + names_in + 1.1)), layout="constrained")
    scale = max(1.0, width / 10)  # a large figure is shown scaled down to the page: its titles grow to stay legible
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=tick)
    ax.set_yticks(range(n), names, fontsize=tick)
    ax.set_xlabel("predicted", fontsize=10 * scale)
    ax.set_ylabel("true", fontsize=10 * scale)
    if rank > 0:  # separate the coarsest rank's groups, so blocks on the diagonal are taxa
        groups = taxonomy.ancestors[rank][:, 0]
        for b in np.flatnonzero(groups[1:] != groups[:-1]) + 0.5:
            ax.axhline(b, color="white", lw=0.4)
            ax.axvline(b, color="white", lw=0.4)
    bar = fig.colorbar(im, ax=ax, shrink=0.6)
    bar.set_label("fraction of the true class", fontsize=10 * scale)
    bar.ax.tick_params(labelsize=10 * scale)
    title = fig.suptitle(f"{taxonomy.ranks[rank]}: confusion matrix, taxonomy order", fontsize=12 * scale)
    _fit_text(fig, title)
    _annotate_cells(fig, ax, cm, norm)
    return fig


def figure_dpi(fig: Figure) -> int:
    """Resolution to save at: large matrices at 100 dpi keep the PNG a few thousand pixels wide."""
    return 150 if max(fig.get_size_inches()) <= 12 else 100


def plot_confusion(cm: np.ndarray, taxonomy: Taxonomy, rank: int, path: Path) -> Path:
    """Write :func:`confusion_figure` to ``path`` (PNG)."""
    fig = confusion_figure(cm, taxonomy, rank)
    fig.savefig(path, dpi=figure_dpi(fig))
    plt.close(fig)
    return path


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as floats (empty cells become NaN)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()}
                for r in csv.DictReader(fh)]


def _loss_figure(rows: list[dict[str, float]], epochs: list[float]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for key, label in (("train/loss", "train"), ("val/loss", "val")):
        if key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (sum over ranks)")
    ax.legend()
    ax.grid(alpha=0.3)
    _fit_text(fig, fig.suptitle("training and validation loss"))
    return fig


def _accuracy_figure(rows: list[dict[str, float]], epochs: list[float], ranks: list[str]) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric, label in zip(axes, ("top1", "macro_f1"), ("top-1", "macro-F1"), strict=True):
        for rank in ranks:
            key = f"val/{rank}/{metric}"
            if key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], marker="o", label=rank)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {label}")
        ax.set_title(f"val {label} per rank")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    _fit_text(fig, fig.suptitle("validation scores per epoch (each rank's own head)"))
    return fig


def curve_figures(metrics_csv: Path, ranks: list[str]) -> dict[str, Figure]:
    """The training-curve figures by file name (``curves_loss.png``, ``curves_accuracy.png``); none without rows."""
    rows = read_metrics_csv(metrics_csv)
    if not rows:
        return {}
    epochs = [r["epoch"] + 1 for r in rows]
    return {"curves_loss.png": _loss_figure(rows, epochs),
            "curves_accuracy.png": _accuracy_figure(rows, epochs, ranks)}


def plot_curves(metrics_csv: Path, ranks: list[str], out_dir: Path) -> list[Path]:
    """``curves_loss.png`` (train and val loss) and ``curves_accuracy.png`` (val top-1 and macro-F1 per rank)."""
    out = []
    for name, fig in curve_figures(metrics_csv, ranks).items():
        out.append(out_dir / name)
        fig.savefig(out[-1], dpi=120)
        plt.close(fig)
    return out


def reliability_figure(curves: dict[str, dict[str, np.ndarray]], ece: dict[str, float | None]) -> Figure:
    """Reliability diagram: per rank, each confidence bin's accuracy against its mean confidence (the diagonal is
    perfect calibration), and below it how many records fall in each bin."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), height_ratios=(3, 1), sharex=True, layout="constrained")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for rank, c in curves.items():
        seen = c["count"] > 0
        label = f"{rank} (ECE {ece[rank]:.3f})" if ece.get(rank) is not None else rank
        line = top.plot(c["confidence"][seen], c["accuracy"][seen], marker="o", label=label)[0]
        edges = np.linspace(0, 1, len(c["count"]) + 1)
        bottom.stairs(c["count"], edges, color=line.get_color())
    top.set_ylabel("accuracy in the bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize="small")
    bottom.set_xlabel("confidence (top-1 probability of each rank's own head)")
    bottom.set_ylabel("records")
    bottom.grid(alpha=0.3)
    _fit_text(fig, fig.suptitle("reliability: is a score of 0.8 right 80% of the time?"))
    return fig


def plot_reliability(curves: dict[str, dict[str, np.ndarray]], ece: dict[str, float | None], path: Path) -> Path:
    """Write :func:`reliability_figure` to ``path`` (PNG, ``reliability.png`` in a run folder)."""
    fig = reliability_figure(curves, ece)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def recall_by_frequency_figure(rows: list[dict[str, Any]], ranks: list[str]) -> Figure:
    """Per rank, each class's test recall against its number of train records (log scale): are the rare classes
    the ones missed? Classes with no test record are left out; the line is the mean recall per power of 2."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    for rank in ranks:
        pts = np.array([(x["train_count"], x["recall"]) for x in rows
                        if x["rank"] == rank and x["support"] > 0 and x.get("train_count", 0) > 0], dtype=float)
        if not len(pts):
            continue
        dots = ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.6, label=f"{rank} ({len(pts)} classes)")
        octave = np.floor(np.log2(pts[:, 0]))
        centres = [(2 ** (o + 0.5), pts[octave == o, 1].mean()) for o in np.unique(octave)]
        ax.plot(*zip(*centres, strict=True), color=dots.get_facecolor()[0], alpha=0.9, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("train records of the class (log scale)")
    ax.set_ylabel("test recall of the class")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    _fit_text(fig, fig.suptitle("recall against training frequency: are the rare classes missed?"))
    return fig


def plot_recall_by_frequency(rows: list[dict[str, Any]], ranks: list[str], path: Path) -> Path:
    """Write :func:`recall_by_frequency_figure` to ``path`` (``recall_by_frequency.png`` in a run folder)."""
    fig = recall_by_frequency_figure(rows, ranks)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
