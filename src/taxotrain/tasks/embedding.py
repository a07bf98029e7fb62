"""``task: embedding``: organism images embedded so that nearest neighbours share their taxa, at every rank.

Inputs are the image task's (same store, transforms, test-time views and prediction inputs). The objective
(``tasks/margin_ranks.py``) is a margin loss per rank on the L2-normalised embedding: ArcFace, CosFace, the combined
margin or sub-centre ArcFace (``loss.margin``, with ``loss.scale``, ``loss.m1``/``m2``/``m3``, ``loss.sub_centers``,
``loss.sample_rate``), weighted over ranks as classification is (``loss.rank_weights``, ``loss.coarse_weight``).
The class centres train in their own optimizer group at ``optim.centre_lr_scale`` times the learning rate.

Validation, evaluate, predict and export see the margin-free logits ``s * cos(theta)`` per rank, so per-rank top-1,
``trainer.monitor``, consistent decoding and the roll-up work as for a classifier; ``softmax(s * cos / T)`` is the
probability they report. ``taxotrain embed``, retrieval evaluation and ``taxotrain gallery`` use the embedding
itself (docs/embeddings.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taxotrain.config import TaskRules
from taxotrain.tasks.base import PRIOR_KEYS, register_task
from taxotrain.tasks.image import SIGNAL_ONLY, ImageClassification

if TYPE_CHECKING:
    from taxotrain.tasks.margin_ranks import MarginRanks

CLASSIFIERS_ONLY = "the classification tasks (image, signal); task: embedding trains margin losses (docs/embeddings.md)"


@register_task("embedding")
class ImageEmbedding(ImageClassification):
    """Embed organism images with a margin loss at every rank (retrieval, few-shot galleries, open set)."""

    rules = TaskRules(
        description="image embeddings: margin losses (ArcFace, CosFace, ...) at every rank, for retrieval and "
        "few-shot galleries",
        default_backbone="resnet18",
        not_applicable={"data.signal_augment": SIGNAL_ONLY,
                        "model.candidates": f"{SIGNAL_ONLY} (model.backbone: auto chooses among closed-form models)",
                        **{key: CLASSIFIERS_ONLY for key in (
                            "model.head", "model.head_condition", "model.drop_rate", "loss.label_smoothing",
                            "loss.smoothing", "loss.smoothing_decay", "loss.class_weights", "loss.class_weight_cap",
                            "loss.logit_adjustment", "loss.logit_adjustment_tau", "loss.weighting",
                            "loss.gradnorm_alpha", "loss.gradnorm_lr", "mix")}, **PRIOR_KEYS},
    )

    def make_objective(self) -> MarginRanks:  # type: ignore[override]
        """Margin losses per rank (imported here: it needs torch)."""
        from taxotrain.tasks.margin_ranks import MarginRanks

        return MarginRanks(self.config, self.taxonomy, self.class_counts)
