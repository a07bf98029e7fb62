"""Margin heads: hand-made angles with known logits, the past-pi rule, sub-centres, sampled centres, ignored labels,
the multi-rank wrapper, and every registered margin's interface."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taxotrain.config import ConfigError
from taxotrain.models.margin import MarginHead, MultiRankMargin, create_margin_head, list_margins


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


CENTRES = [0.0, 2.0, -1.2]  # angles of the three class centres in the plane
THETA = 0.7  # the embedding's angle to its class centre (class 0)


def planar_head(name: str, scale: float = 8.0, **kwargs: object) -> MarginHead:
    head = create_margin_head(name, 2, len(CENTRES), scale=scale, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(a) for a in CENTRES]) * 3.0)  # the norm must not matter
    return head


@pytest.mark.parametrize(("name", "kwargs", "target"), [
    ("arcface", {"margin": 0.5}, lambda t: math.cos(t + 0.5)),
    ("cosface", {"margin": 0.35}, lambda t: math.cos(t) - 0.35),
    ("combined", {"m1": 1.2, "m2": 0.3, "m3": 0.1}, lambda t: math.cos(1.2 * t + 0.3) - 0.1),
    ("combined", {"m1": 0.9, "m2": 0.2, "m3": 0.05}, lambda t: math.cos(0.9 * t + 0.2) - 0.05),
])
def test_target_logit_gets_the_margin_and_the_others_do_not(name: str, kwargs: dict, target) -> None:
    s = 8.0
    head = planar_head(name, s, **kwargs)
    emb = torch.tensor([unit(THETA)])
    out = head(emb, torch.tensor([0]))
    plain = [s * math.cos(THETA - a) for a in CENTRES]
    assert out.logits[0].tolist() == pytest.approx(plain, abs=1e-4)  # no margin in the returned logits
    margin_logits = torch.tensor([[s * target(THETA), *plain[1:]]])
    assert s * head.margin_cosine(torch.tensor([math.cos(THETA)])).item() == pytest.approx(s * target(THETA), abs=1e-4)
    assert out.loss.item() == pytest.approx(F.cross_entropy(margin_logits, torch.tensor([0])).item(), abs=1e-4)
    assert out.loss.item() > 1.5 * F.cross_entropy(torch.tensor([plain]), torch.tensor([0])).item()  # margin bites


def test_combined_1_05_0_is_arcface_and_1_0_m_is_cosface() -> None:
    torch.manual_seed(0)
    emb, labels = F.normalize(torch.randn(16, 8), dim=-1), torch.randint(0, 5, (16,))
    for other, kwargs in [("arcface", {}), ("cosface", {"margin": 0.35})]:
        ref = create_margin_head(other, 8, 5, **kwargs)
        m = (1.0, 0.5, 0.0) if other == "arcface" else (1.0, 0.0, 0.35)
        combined = create_margin_head("combined", 8, 5, m1=m[0], m2=m[1], m3=m[2])
        combined.load_state_dict(ref.state_dict())
        a, b = ref(emb, labels), combined(emb, labels)
        assert torch.allclose(a.loss, b.loss) and torch.allclose(a.logits, b.logits)
    assert create_margin_head("combined", 8, 5).m2 == 0.5  # the defaults are ArcFace's


def test_past_pi_the_arcface_target_is_cos_minus_m_sin_m() -> None:
    head = create_margin_head("arcface", 2, 3, margin=0.5)
    theta = math.pi - 0.3  # theta + m > pi
    got = head.margin_cosine(torch.tensor([math.cos(theta)])).item()
    assert got == pytest.approx(math.cos(theta) - 0.5 * math.sin(0.5), abs=1e-5)
    assert got != pytest.approx(math.cos(theta + 0.5), abs=1e-2)


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.0, 1.2, 0.0), (1.35, 0.0, 0.0), (1.2, 0.4, 0.2), (0.8, 0.3, 0.1),
                               (1.0, 0.0, 0.35)])
def test_target_logit_never_rises_with_the_angle(m: tuple[float, float, float]) -> None:
    head = create_margin_head("combined", 2, 3, m1=m[0], m2=m[1], m3=m[2])
    theta = torch.linspace(0.0, math.pi, 2001)
    target = head.margin_cosine(theta.cos())
    assert (target.diff() <= 1e-6).all()
    assert torch.isfinite(target).all()


def test_sub_centre_picks_the_nearest_sub_centre() -> None:
    s = 8.0
    head = create_margin_head("subcenter_arcface", 2, 2, sub_centers=2, scale=s)
    angles = [0.0, 1.5, 3.0, -2.0]  # class 0: rows 0, 1; class 1: rows 2, 3
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(a) for a in angles]))
    emb = torch.tensor([unit(1.3)], requires_grad=True)
    assert head.cosine(emb)[0].tolist() == pytest.approx([math.cos(0.2), math.cos(1.7)], abs=1e-5)
    out = head(emb, torch.tensor([0]))
    expected = F.cross_entropy(torch.tensor([[s * math.cos(0.2 + 0.5), s * math.cos(1.7)]]), torch.tensor([0]))
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-4)
    out.loss.backward()
    grad = head.weight.grad.norm(dim=1)
    assert grad[1] > 0 and grad[2] > 0 and grad[0] == 0 and grad[3] == 0  # only each class's nearest one learns


def test_sampled_centres_keep_every_positive_and_score_only_the_sample() -> None:
    torch.manual_seed(0)
    head = create_margin_head("arcface", 8, 10_000, sample_rate=0.1).train()
    for step in range(40):
        b = 3000 if step == 0 else 64  # the first batch has more positives than the sample size
        labels = torch.randint(0, 10_000, (b,))
        labels[::7] = -1
        emb = torch.randn(b, 8, requires_grad=True)
        out = head(emb, labels)
        positives = labels[labels >= 0].unique()
        assert out.index is not None
        assert len(out.index) == max(len(positives), 1000) and out.logits.shape == (b, len(out.index))
        assert torch.isin(positives, out.index).all() and (out.index.diff() > 0).all()
        known = labels >= 0
        assert torch.equal(out.index[out.labels[known]], labels[known]) and (out.labels[~known] == -1).all()
        head.weight.grad = None
        out.loss.backward()
        touched = head.weight.grad.abs().sum(1) > 0
        assert touched[positives].all() and not touched[~torch.isin(torch.arange(10_000), out.index)].any()
    assert step == 39


def test_sampled_loss_is_the_full_loss_over_the_sampled_columns() -> None:
    torch.manual_seed(1)
    head = create_margin_head("cosface", 8, 50, sample_rate=0.2, scale=4.0).train()
    emb, labels = torch.randn(6, 8), torch.randint(0, 50, (6,))
    out = head(emb, labels)
    full = head.cosine(emb)[:, out.index]
    y = out.labels[:, None]
    expected = F.cross_entropy(4.0 * full.scatter(1, y, full.gather(1, y) - 0.35), out.labels)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.equal(out.predictions(), out.index[full.argmax(-1)])


def test_sample_rate_one_and_a_sample_of_every_class_match_the_full_layer() -> None:
    torch.manual_seed(2)
    full = create_margin_head("arcface", 8, 6, scale=4.0)
    everything = create_margin_head("arcface", 8, 6, scale=4.0, sample_rate=0.5).train()  # all 6 are positives
    everything.load_state_dict(full.state_dict())
    emb, labels = torch.randn(12, 8), torch.arange(12) % 6
    a, b = full.train()(emb, labels), everything(emb, labels)
    assert a.index is None and b.index is None
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)
    everything.eval()  # evaluation scores every class
    assert everything(emb[:2], labels[:2]).index is None


def test_unlabelled_rows_add_no_loss_and_an_unlabelled_batch_gives_zero_in_the_graph() -> None:
    torch.manual_seed(3)
    head = create_margin_head("arcface", 8, 5, scale=4.0)
    emb, labels = torch.randn(6, 8), torch.tensor([0, -1, 3, -1, 4, 2])
    known = labels >= 0
    assert head(emb, labels).loss.item() == pytest.approx(head(emb[known], labels[known]).loss.item(), abs=1e-6)
    none = head(emb, torch.full((6,), -1))
    assert none.loss.item() == 0.0 and none.loss.grad_fn is not None
    none.loss.backward()
    assert head.weight.grad is not None and (head.weight.grad == 0).all()


def test_gradients_reach_the_embedding_and_the_centres() -> None:
    torch.manual_seed(4)
    head = create_margin_head("combined", 8, 5, m1=1.1, m2=0.3, m3=0.1)
    emb = torch.randn(6, 8, requires_grad=True)
    head(emb, torch.randint(0, 5, (6,))).loss.backward()
    assert emb.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0
    assert head.centre_parameters() == [head.weight]


RANKS, SIZES = ["family", "genus", "species"], [3, 5, 40]


def test_multi_rank_margin_names_its_parts_and_weights_the_sum() -> None:
    torch.manual_seed(5)
    model = MultiRankMargin(RANKS, SIZES, 8, "cosface", rank_weights={"family": 0.5, "species": 2.0}, scale=4.0,
                            rank_kwargs={"species": {"sample_rate": 0.25}}).train()
    emb = torch.randn(10, 8)
    targets = torch.stack([torch.randint(0, n, (10,)) for n in SIZES], 1)
    targets[0, 1] = -1
    out = model(emb, targets)
    assert set(out.losses) == {"loss", "family/loss", "genus/loss", "species/loss"}
    parts = [out.losses[f"{r}/loss"] for r in RANKS]
    assert out.losses["loss"].item() == pytest.approx((0.5 * parts[0] + parts[1] + 2.0 * parts[2]).item(), abs=1e-5)
    assert not any(p.requires_grad for p in parts) and out.losses["loss"].requires_grad
    alone = model.heads["1"](emb, targets[:, 1]).loss  # genus has no sampling: the same loss again
    assert parts[1].item() == pytest.approx(alone.item(), abs=1e-6)
    assert [v.shape[1] for v in out.logits.values()][:2] == SIZES[:2] and out.outputs["species"].index is not None
    assert [v.shape for v in model.cosine(emb).values()] == [(10, n) for n in SIZES]
    assert len(model.centre_parameters()) == 3


def test_multi_rank_margin_rejects_an_unknown_rank() -> None:
    with pytest.raises(ConfigError, match="order"):
        MultiRankMargin(RANKS, SIZES, 8, rank_weights={"order": 1.0})


@pytest.mark.parametrize("name", list_margins())
def test_every_margin_gives_a_finite_loss_logits_and_gradients(name: str) -> None:
    torch.manual_seed(6)
    head = create_margin_head(name, 16, 7, sample_rate=None).train()
    emb = torch.randn(4, 16, requires_grad=True)
    out = head(emb, torch.tensor([0, 6, -1, 3]))
    assert out.logits.shape == (4, 7) and torch.isfinite(out.loss)
    cos = head.cosine(emb)
    assert cos.shape == (4, 7) and (cos.abs() <= 1 + 1e-6).all()
    out.loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert {id(p) for p in head.centre_parameters()} == {id(p) for p in head.parameters()}


def test_unknown_margin_lists_choices_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="arcface"):
        create_margin_head("nope", 4, 3)
    for kwargs in [{"sample_rate": 0.0}, {"sample_rate": 1.5}, {"margin": -0.1}, {"scale": 0.0}]:
        with pytest.raises(ValueError):
            create_margin_head("arcface", 4, 3, **kwargs)


def test_matches_pytorch_metric_learning_arcface_in_degrees_and_cosface() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(7)
    emb, labels = torch.randn(32, 8), torch.randint(0, 10, (32,))
    for name, ref in [("arcface", losses.ArcFaceLoss(10, 8, margin=math.degrees(0.5), scale=64)),
                      ("cosface", losses.CosFaceLoss(10, 8, margin=0.35, scale=64))]:
        head = create_margin_head(name, 8, 10)
        with torch.no_grad():
            head.weight.copy_(ref.W.T)
        assert head(emb, labels).loss.item() == pytest.approx(ref(emb, labels).item(), rel=1e-4)
