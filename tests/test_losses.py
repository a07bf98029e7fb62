"""Per-rank loss: null labels are masked, weights apply, an all-null rank contributes zero but keeps the graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taxotrain.losses import MultiRankLoss
from taxotrain.taxonomy import NULL


def test_null_labels_are_masked() -> None:
    torch.manual_seed(0)
    logits = {"genus": torch.randn(6, 4, requires_grad=True), "species": torch.randn(6, 7, requires_grad=True)}
    y = torch.tensor([[0, 1], [1, NULL], [2, 3], [3, NULL], [0, 6], [1, 2]])
    out = MultiRankLoss(["genus", "species"], rank_weights={"genus": 0.5})(logits, y)
    known = y[:, 1] != NULL
    expected = 0.5 * F.cross_entropy(logits["genus"], y[:, 0]) + F.cross_entropy(logits["species"][known],
                                                                                 y[known, 1])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["species/loss"].item() == pytest.approx(F.cross_entropy(logits["species"][known], y[known, 1]).item())


def test_all_null_rank_is_zero_and_differentiable() -> None:
    logits = {"a": torch.randn(3, 2, requires_grad=True), "b": torch.randn(3, 5, requires_grad=True)}
    y = torch.tensor([[0, NULL], [1, NULL], [0, NULL]])
    out = MultiRankLoss(["a", "b"], label_smoothing=0.1)(logits, y)
    out["loss"].backward()
    assert out["b/loss"].item() == 0.0 and logits["b"].grad is not None and torch.isfinite(out["loss"])


def test_unknown_rank_weight_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown rank"):
        MultiRankLoss(["a"], rank_weights={"b": 2.0})


def test_taxonomic_smoothing_gives_relatives_more_mass() -> None:
    from taxotrain.losses import taxonomic_targets
    from taxotrain.taxonomy import Taxonomy

    tax = Taxonomy.from_rows(["family", "genus", "species"], [("F1", "G1", "S1"), ("F1", "G1", "S2"),
                                                              ("F1", "G2", "S3"), ("F2", "G3", "S4")])
    t = taxonomic_targets(tax, 2, eps=0.2, decay=1.0)
    s1, s2, s3, s4 = (tax.index(2, n) for n in ("S1", "S2", "S3", "S4"))
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[s1, s1].item() == pytest.approx(0.8)
    assert t[s1, s2] > t[s1, s3] > t[s1, s4] > 0  # sibling > same family > other family
    # distances 2, 4, 6 -> weights e^-2, e^-4, e^-6 normalised over the 0.2 of smoothing mass
    w = torch.tensor([2.0, 4.0, 6.0]).neg().exp()
    assert torch.allclose(torch.stack([t[s1, s2], t[s1, s3], t[s1, s4]]), 0.2 * w / w.sum(), atol=1e-6)
    uniform_like = taxonomic_targets(tax, 2, eps=0.2, decay=0.0)
    assert torch.allclose(uniform_like[s1, [s2, s3, s4]], torch.full((3,), 0.2 / 3))


def test_soft_target_loss_matches_manual_and_mix_partner() -> None:
    from taxotrain.config import LossConfig
    from taxotrain.losses import MultiRankLoss
    from taxotrain.taxonomy import Taxonomy

    tax = Taxonomy.from_rows(["g", "s"], [("A", "a1"), ("A", "a2"), ("B", "b1")])
    loss = MultiRankLoss.from_config(LossConfig(label_smoothing=0.3, smoothing="taxonomic"), tax)
    logits = {"g": torch.randn(4, 2), "s": torch.randn(4, 3)}
    y = torch.tensor([[0, 0], [0, 1], [1, 2], [1, NULL]])
    parts = loss.rank_losses(logits, y)
    t = loss.targets1[y[:3, 1]]
    manual = -(t * F.log_softmax(logits["s"][:3], -1)).sum(-1).mean()
    assert parts[1].item() == pytest.approx(manual.item(), rel=1e-6)
    partner = y[[1, 0, 2, 3]]
    mixed = loss.rank_losses(logits, y, partner, lam=0.25)
    other = loss.rank_losses(logits, partner)
    assert mixed[1].item() == pytest.approx(0.25 * parts[1].item() + 0.75 * other[1].item(), rel=1e-6)


def test_gradnorm_moves_weight_towards_the_rank_with_small_gradients() -> None:
    from taxotrain.losses import GradNorm

    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(8, 4))
    gn = GradNorm(2, alpha=0.0, lr=0.1)
    for _ in range(20):
        z = shared.sum(1)
        weights = gn.step([(z * 10).pow(2).mean(), z.pow(2).mean()], shared)  # rank 0 has 10x the gradient
    assert weights.sum().item() == pytest.approx(2.0, rel=1e-5)
    assert weights[1] > weights[0]


def test_coarse_ranks_weigh_a_quarter_by_default_and_rank_weights_override() -> None:
    from taxotrain.config import LossConfig
    from taxotrain.losses import resolve_rank_weights

    ranks = ["family", "genus", "species"]
    assert resolve_rank_weights(LossConfig(), ranks) == {"family": 0.25, "genus": 0.25, "species": 1.0}
    assert resolve_rank_weights(LossConfig(coarse_weight=1.0, rank_weights={"genus": 0.5}), ranks) == {
        "family": 1.0, "genus": 0.5, "species": 1.0}
    assert resolve_rank_weights(LossConfig(), ["class"]) == {"class": 1.0}  # a single rank is the finest
    with pytest.raises(ValueError, match="unknown rank"):
        resolve_rank_weights(LossConfig(rank_weights={"order": 1.0}), ranks)
