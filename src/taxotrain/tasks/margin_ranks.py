"""The objective of ``task: embedding``: a margin loss per rank on the L2-normalised embedding (ArcFace, CosFace,
the combined margin, sub-centre ArcFace; ``models/margin.py``), with the metrics, decoding and records of per-rank
classification on the margin-free cosine logits. Imported when an embedding task is created (it needs torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taxotrain.config import LossConfig
from taxotrain.tasks.base import StepOutput
from taxotrain.tasks.classification import RankClassification, model_inputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from taxotrain.models.embedding import EmbeddingClassifier


def margin_settings(loss: LossConfig) -> dict[str, Any]:
    """Keyword arguments of ``loss.margin``'s head from the config (``None`` = the head's own default)."""
    settings: dict[str, Any] = {"scale": loss.scale, "sample_rate": loss.sample_rate}
    if loss.margin == "combined":
        settings.update(m1=loss.m1, m2=loss.m2, m3=loss.m3)
    elif loss.margin == "cosface":
        settings["margin"] = loss.m3
    else:  # arcface, subcenter_arcface: the angle in radians
        settings["margin"] = loss.m2
        if loss.margin == "subcenter_arcface":
            settings["sub_centers"] = loss.sub_centers
    return settings


class MarginRanks(RankClassification):
    """A margin loss per rank on the normalised embedding; metrics, decoding and records as classification's."""

    def build_model(self, backbone: nn.Module) -> EmbeddingClassifier:
        """``backbone`` -> projection to ``model.embed_dim`` -> L2 norm -> a margin head per rank."""
        from taxotrain.losses import resolve_rank_weights
        from taxotrain.models.embedding import EmbeddingClassifier
        from taxotrain.models.margin import MultiRankMargin

        cfg = self.config
        width = cfg.model.embed_dim or int(backbone.num_features)
        settings = margin_settings(cfg.loss)
        # the heads' own ``margin`` argument shares its name with MultiRankMargin's choice of head: given per rank
        angle = {"margin": settings.pop("margin", None)}
        margin = MultiRankMargin(self.ranks, list(self.taxonomy.num_classes), width, cfg.loss.margin,
                                 resolve_rank_weights(cfg.loss, self.ranks), {r: angle for r in self.ranks}, **settings)
        return EmbeddingClassifier(backbone, margin, self.ranks, list(self.taxonomy.num_classes), cfg.model.embed_dim)

    def set_mixup(self, alpha: float) -> None:
        """No mixing: the mix section does not apply to margin losses."""

    def modules(self) -> dict[str, nn.Module]:
        """Nothing outside the model: the class centres are the model's."""
        return {}

    def param_groups(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        """The class centres at ``optim.centre_lr_scale`` times the learning rate."""
        return [(list(model.centre_parameters()), self.config.optim.centre_lr_scale)]

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Embedding -> margin loss of every rank (with sampled centres if ``loss.sample_rate`` < 1)."""
        y = batch["target"]
        out = model.margin_loss(model.forward_features(**model_inputs(model, batch)), y)
        return StepOutput(out.losses["loss"], out.losses, out.logits, len(y))

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The margin loss, and the margin-free cosine logits of every class for the metrics."""
        y = batch["target"]
        emb = model.forward_features(**model_inputs(model, batch))
        out = model.margin_loss(emb, y)
        return StepOutput(out.losses["loss"], out.losses, model.forward_head(emb), len(y))
