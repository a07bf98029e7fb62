"""The run folder: where every command finds and leaves its files (light: no torch, so the CLI can use it at once).

::

    <run.dir>/config.yaml            resolved config of the fit
    <run.dir>/checkpoints/best.ckpt  best epoch by trainer.monitor;  checkpoints/last.ckpt  the latest epoch
    <run.dir>/metrics.csv            one row per epoch
    <run.dir>/selection.json         model.backbone: auto: every candidate's score and fit time, and the one chosen
    <run.dir>/ensemble.json          `taxotrain ensemble`: the member runs (checkpoints, backbones) averaged
    <run.dir>/mlruns/, tensorboard/  tracker files
    <run.dir>/metrics.json, per_class.csv, confusion_<rank>.png, curves_*.png, reliability.png, report.html  evaluate
    <run.dir>/predictions_<split>.npz  per-record probabilities and decoded paths (what --compare resamples)
    <run.dir>/rollup.json            roll-up thresholds chosen on val by evaluate (what predict and export use)
    <run.dir>/gallery/               `taxotrain gallery build/add`: gallery.npz (labelled embeddings) and gallery.json
                                     (taxa, similarity thresholds per rank), what predict --gallery names records from
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Named paths inside a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.root / "per_class.csv"

    def predictions(self, split: str) -> Path:
        """Per-record probabilities, labels and decoded paths of the last evaluation on ``split`` (for --compare)."""
        return self.root / f"predictions_{split}.npz"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def rollup(self) -> Path:
        return self.root / "rollup.json"

    @property
    def gallery(self) -> Path:
        """The few-shot gallery's folder (``inference/gallery.py``)."""
        return self.root / "gallery"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble.json"

    @property
    def mlflow_run_id(self) -> Path:
        return self.root / "mlflow_run_id.txt"
