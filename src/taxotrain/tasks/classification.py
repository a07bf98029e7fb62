"""The per-rank classification objective: one softmax per rank, taxonomy-aware loss, per-rank metrics, and
consistent decoding of the probabilities into prediction records.

Composed into the image and signal tasks (``tasks/base.py``). The Lightning module never sees a rank: it gets the
loss and its named parts (``loss``, ``<rank>/loss``, ``<rank>/weight``) from :meth:`RankClassification.training_step`
and metric values named ``<rank>/<metric>`` from :class:`RankMetrics`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from taxotrain.config import Config
from taxotrain.losses import GradNorm, MultiRankLoss
from taxotrain.models.classifier import TaxonomicClassifier, build_classifier
from taxotrain.tasks.base import InputBatch, StepOutput
from taxotrain.tasks.mixing import TaxonomyMixer
from taxotrain.taxonomy import NULL, Taxonomy
from taxotrain_runtime.records import PredictionRecord, make_records, rank_columns, record_row

METRIC_NAMES = ("top1", "top5", "macro_f1")


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch entries the model takes, by name (``model.input_names``; ``input`` alone for plain modules); an
    entry the batch lacks is left to the model's default (no ``meta``: no place/date metadata)."""
    return {name: batch[name] for name in getattr(model, "input_names", ("input",)) if name in batch}


def _collection(num_classes: int) -> MetricCollection:
    """top-1, top-5 (top-k capped at the class count) and macro-F1 for one rank; nulls ignored."""
    return MetricCollection({
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=NULL),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", ignore_index=NULL),
        "macro_f1": MulticlassF1Score(num_classes, average="macro", ignore_index=NULL),
    })


class RankMetrics(nn.Module):
    """Validation metrics of every rank, named ``<rank>/<metric>``; records unknown at a rank are left out there."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        super().__init__()
        self.ranks = list(taxonomy.ranks)
        self.per_rank = nn.ModuleDict({str(r): _collection(n) for r, n in enumerate(taxonomy.num_classes)})

    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """Add a batch: ``outputs`` are logits per rank, ``batch["target"]`` the labels ``[B, R]``."""
        target = batch["target"]
        for r, rank in enumerate(self.ranks):
            known = target[:, r] != NULL
            if known.any():
                self.per_rank[str(r)].update(outputs[rank][known].float(), target[known, r])

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"<rank>/<metric>": value}`` over the batches added since the last reset."""
        return {f"{rank}/{name}": value for r, rank in enumerate(self.ranks)
                for name, value in self.per_rank[str(r)].compute().items()}

    def reset(self) -> None:
        """Forget the batches added so far."""
        for collection in self.per_rank.values():
            collection.reset()


class RankProbabilities(nn.Module):
    """What inference computes, and what an exported bundle holds: raw input (pixel values, or a prepared series)
    -> ``preprocess`` (normalisation) -> model -> the softmax probabilities of each rank, in rank order, then the
    embedding (``output_names`` names them)."""

    def __init__(self, model: nn.Module, preprocess: nn.Module, ranks: list[str]) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.ranks = list(ranks)

    @property
    def output_names(self) -> list[str]:
        """``probs_<rank>`` for every rank, then ``embedding``."""
        return [f"probs_{rank}" for rank in self.ranks] + ["embedding"]

    def forward(self, input: torch.Tensor, **extra: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002
        features = self.model.forward_features(self.preprocess(input), **extra)  # extra: e.g. meta
        logits = self.model.forward_head(features)
        return (*(logits[rank].float().softmax(-1) for rank in self.ranks), features)


class RankClassification:
    """Per-rank classification: loss (smoothing, rank weights or GradNorm, mixing within a rank), metrics, decoding."""

    def __init__(self, config: Config, taxonomy: Taxonomy, class_counts: list[np.ndarray] | None = None) -> None:
        self.config = config
        self.taxonomy = taxonomy
        self.ranks = list(taxonomy.ranks)
        self.class_counts = class_counts  # train records per class at each rank (a new fit only)

    # The training parts are built on first use: a run restored for evaluate, predict or export never needs them, and
    # taxonomic smoothing's targets cost O(classes^2) per rank.
    @cached_property
    def loss(self) -> MultiRankLoss:
        """The per-rank loss (with its smoothing targets)."""
        return MultiRankLoss.from_config(self.config.loss, self.taxonomy, self.class_counts)

    @cached_property
    def mixer(self) -> TaxonomyMixer:
        """Mixup/cutmix, within a rank if configured."""
        return TaxonomyMixer(self.config.mix, self.ranks)

    @cached_property
    def gradnorm(self) -> GradNorm | None:
        """GradNorm's learnt rank weights, when ``loss.weighting: gradnorm``."""
        cfg = self.config.loss
        return GradNorm(len(self.ranks), cfg.gradnorm_alpha, cfg.gradnorm_lr) if cfg.weighting == "gradnorm" else None

    def build_model(self, backbone: nn.Module) -> TaxonomicClassifier:
        """The head ``model.head`` names on ``backbone``: logits per rank (with ``loss.logit_adjustment: predict``,
        less ``tau * log prior`` outside training: the train prior for a new fit, the saved one for a restored run)."""
        model = build_classifier(backbone, self.config.model, self.taxonomy)
        loss = self.config.loss
        if loss.logit_adjustment == "predict" and self.class_counts is not None:  # a restored run: from its weights
            from taxotrain.losses import log_prior

            model.set_prior_offsets([loss.logit_adjustment_tau * log_prior(c) for c in self.class_counts])
        return model

    def ensemble(self, members: list[nn.Module]) -> nn.Module:
        """The members' probabilities averaged at every rank."""
        from taxotrain.models.ensemble import EnsembleClassifier

        return EnsembleClassifier(members, self.ranks)

    def set_mixup(self, alpha: float) -> None:
        """Mixup's Beta(alpha, alpha) from now on (progressive stages grow it)."""
        if self.mixer.cfg.mixup_alpha != alpha:
            self.mixer.cfg = self.mixer.cfg.model_copy(update={"mixup_alpha": alpha})

    def param_groups(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        """Parameters with their own learning-rate multiplier: none (every parameter at ``optim.lr``)."""
        return []

    def modules(self) -> dict[str, nn.Module]:
        """Parts with state to checkpoint and move to the device (soft-target buffers, GradNorm's weights)."""
        return {"loss": self.loss, **({"gradnorm": self.gradnorm} if self.gradnorm is not None else {})}

    # ------------------------------------------------------------------ training

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Mixed (if configured) batch -> logits -> per-rank losses -> weighted sum; named parts for the loggers."""
        y = batch["target"]
        x, partner, lam = self.mixer(batch["input"], y)
        logits = model(**model_inputs(model, {**batch, "input": x}))
        per_rank = self.loss.rank_losses(logits, y, partner, lam)
        weights = self.gradnorm.step(per_rank, _shared_parameter(model)) if self.gradnorm is not None else None
        parts = self.loss.combine(per_rank, weights)
        if weights is not None:
            parts.update({f"{rank}/weight": w for rank, w in zip(self.ranks, weights, strict=True)})
        return StepOutput(parts["loss"], parts, logits, len(y))

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Unmixed logits and the loss with the configured rank weights."""
        logits = model(**model_inputs(model, batch))
        parts = self.loss(logits, batch["target"])
        return StepOutput(parts["loss"], parts, logits, len(batch["target"]))

    def metrics(self) -> RankMetrics:
        """Fresh validation metrics."""
        return RankMetrics(self.taxonomy)

    def metric_names(self) -> list[str]:
        """``<rank>/<metric>`` for every rank and metric the validation logs."""
        return [f"{rank}/{m}" for rank in self.ranks for m in METRIC_NAMES]

    def default_metric(self) -> str:
        """The finest rank's top-1."""
        return f"{self.taxonomy.finest}/top1"

    def fit_closed_form(self, model: nn.Module, x: torch.Tensor, targets: np.ndarray) -> dict[str, Any]:
        """The backbone's transform, then a ridge classifier per rank written into the ``linear`` heads; per rank what
        was chosen, with each known train record's leave-one-out probabilities (``loo_probs``)."""
        from dataclasses import asdict

        from taxotrain.models.ridge import fit_closed_form

        fitted = fit_closed_form(model, x, targets, self.taxonomy)
        return {rank: {k: v for k, v in asdict(f).items() if k not in ("weight", "bias")}
                for rank, f in fitted.items()}

    # ------------------------------------------------------------------ prediction

    def inference(self, model: nn.Module, preprocess: nn.Module) -> RankProbabilities:
        """The trained model as inference runs it and export writes it: raw input in, probabilities out."""
        return RankProbabilities(model, preprocess, self.ranks)

    @torch.no_grad()
    def predict(self, module: RankProbabilities, views: list[torch.Tensor],
                extra: dict[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
        """Probabilities per rank, averaged over the views of one batch (``extra``: inputs besides the views, the
        same for each, e.g. ``meta``)."""
        total: list[torch.Tensor] = []
        for view in views:
            probs = module(view, **(extra or {}))[: len(self.ranks)]
            total = [t + p for t, p in zip(total, probs, strict=True)] if total else list(probs)
        return {rank: (p / len(views)).cpu().numpy() for rank, p in zip(self.ranks, total, strict=True)}

    @torch.no_grad()
    def embed(self, module: RankProbabilities, x: torch.Tensor,
              extra: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """The embedding output of the inference module (after the probabilities of every rank), float32."""
        return module(x, **(extra or {}))[len(self.ranks)].float().cpu().numpy()

    def columns(self, topk: int) -> list[str]:
        """Prediction CSV columns: label and score per rank, the roll-up, the finest rank's top-k."""
        return rank_columns(self.taxonomy, topk)

    def records(self, probs: dict[str, np.ndarray], batch: InputBatch, thresholds: list[float] | None,
                topk: int) -> list[PredictionRecord]:
        """A record per input of ``batch``: the consistent path, the roll-up at ``thresholds`` (one per rank;
        ``None`` = 0.5) and the top-k; ``probs`` has a row per readable input, in order."""
        return make_records(probs, self.taxonomy, batch.ids, batch.errors, batch.extra, thresholds, topk)

    def row(self, record: PredictionRecord) -> dict[str, Any]:
        """A prediction record as a CSV row (the columns :meth:`columns` names, plus ids, extras and error)."""
        return record_row(record, self.taxonomy)


def _shared_parameter(model: nn.Module) -> torch.Tensor:
    """The last weight matrix/kernel of the backbone: where GradNorm measures each rank's gradient."""
    return [p for p in model.backbone.parameters() if p.ndim > 1][-1]


ECE_BINS = 15  # as evaluate's report


def _ece(scores: np.ndarray, y: np.ndarray) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = torch.from_numpy(scores).softmax(-1)
    return float(multiclass_calibration_error(probs, torch.from_numpy(y), scores.shape[1], n_bins=ECE_BINS,
                                              norm="l1"))


def fit_rank_temperatures(logits: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per rank: the temperature of least val log loss over the records known there, and the log loss and ECE
    before (T = 1) and after. A rank with no known val record keeps T = 1."""
    from scipy.special import log_softmax

    from taxotrain.models.temperature import fit_temperature

    out = {}
    for r, (rank, scores) in enumerate(logits.items()):
        known = targets[:, r] != NULL
        s, y = scores[known].astype(np.float64), targets[known, r].astype(np.int64)
        if len(y) == 0:
            out[rank] = {"temperature": 1.0, "records": 0, "nll_before": float("nan"), "nll_after": float("nan"),
                         "ece_before": float("nan"), "ece_after": float("nan")}
            continue
        temperature, nll = fit_temperature(s, y)
        out[rank] = {"temperature": temperature, "records": int(len(y)),
                     "nll_before": float(-log_softmax(s, axis=1)[np.arange(len(y)), y].mean()), "nll_after": nll,
                     "ece_before": _ece(s, y), "ece_after": _ece(s / temperature, y)}
    return out
