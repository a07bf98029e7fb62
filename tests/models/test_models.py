"""Backbones from timm, every registered head, the assembled model's interface, local pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from taxotrain.config import ModelConfig
from taxotrain.models.backbones import BackboneError, create_backbone
from taxotrain.models.classifier import build_classifier
from taxotrain.models.heads import create_head, list_heads
from taxotrain.taxonomy import Taxonomy

TAX = Taxonomy.from_rows(["family", "genus", "species"], [("F1", "G1", "S1"), ("F1", "G1", "S2"),
                                                          ("F1", "G2", "S3"), ("F2", "G3", "S4"), ("F2", None, "S5")])


@pytest.mark.parametrize("head", list_heads())
def test_every_head_gives_logits_per_rank_and_gradients(head: str) -> None:
    torch.manual_seed(0)
    module = create_head(head, 16, TAX, drop_rate=0.0)
    out = module(torch.randn(4, 16))
    assert list(out) == TAX.ranks
    assert [v.shape for v in out.values()] == [(4, n) for n in TAX.num_classes]
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_unknown_head_lists_choices() -> None:
    with pytest.raises(ValueError, match="linear"):
        create_head("nope", 4, TAX)


def test_model_interface_and_greyscale_input() -> None:
    model = build_classifier(create_backbone("test_resnet", in_chans=1), ModelConfig(), TAX)
    x = torch.randn(2, 1, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features) and model.input_names == ("input",)
    logits = model(input=x)
    assert {k: v.shape[1] for k, v in logits.items()} == dict(zip(TAX.ranks, TAX.num_classes, strict=True))
    assert torch.allclose(model.forward_head(feats)["species"], logits["species"])


def test_unknown_backbone_is_one_line() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'resnet1800'.*timm"):
        create_backbone("resnet1800")


def test_pretrained_from_local_file_adapts_first_conv(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    net = create_backbone("test_resnet", pretrained_path=str(tmp_path / "weights.pth"), in_chans=1)
    src = source.state_dict()
    got = net.state_dict()
    first = next(k for k in got if got[k].ndim == 4)
    assert got[first].shape[1] == 1
    assert torch.allclose(got[first][:, 0], src[first].sum(1), atol=1e-5)  # timm sums RGB filters for 1 channel
    others = [k for k in got if k != first and k in src]
    assert others and all(torch.equal(got[k], src[k]) for k in others)
    with pytest.raises(BackboneError, match="not found"):
        create_backbone("test_resnet", pretrained_path=str(tmp_path / "missing.pth"))


def test_hierarchical_softmax_probabilities_follow_the_tree() -> None:
    torch.manual_seed(0)
    out = create_head("hierarchical_softmax", 16, TAX)(torch.randn(5, 16))
    p = {k: v.exp() for k, v in out.items()}
    assert torch.allclose(p["family"].sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(p["species"].sum(1), torch.ones(5), atol=1e-5)
    for r, child_rank in ((0, 2), (1, 2), (0, 1)):  # a node holds the mass of everything below it
        anc = torch.as_tensor(TAX.ancestors[child_rank][:, r])
        rank, child = TAX.ranks[r], TAX.ranks[child_rank]
        for node in range(TAX.num_classes[r]):
            under = (anc == node).nonzero().flatten()
            if child_rank == 2:
                assert torch.allclose(p[rank][:, node], p[child][:, under].sum(1), atol=1e-5)
    # genus holds what is not in species that skip it (S5 hangs straight under F2)
    s5 = TAX.index(2, "S5")
    assert torch.allclose(p["genus"].sum(1) + p["species"][:, s5], torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("condition", ["soft", "hard"])
def test_conditional_head_uses_the_coarser_prediction(condition: str) -> None:
    torch.manual_seed(0)
    head = create_head("conditional", 8, TAX, condition=condition)
    x = torch.randn(3, 8)
    with torch.no_grad():  # change only what the coarsest head says: finer logits must move
        head.fc["0"].bias += torch.tensor([20.0, -20.0])
        first = head(x)
        head.fc["0"].bias -= torch.tensor([40.0, -40.0])
        moved = head(x)
    assert not torch.allclose(first["genus"], moved["genus"])
    assert [moved[r].shape for r in TAX.ranks] == [(3, n) for n in TAX.num_classes]
    # soft feeds the coarser softmax, so a finer loss trains the coarser head; hard feeds a one-hot argmax: it does not
    head.zero_grad()
    head(x)["genus"].logsumexp(-1).sum().backward()
    grad = head.fc["0"].weight.grad
    reached = grad is not None and bool(grad.abs().sum() > 0)
    assert reached == (condition == "soft")


def test_flat_head_sums_the_finest_softmax_into_coarser_ranks() -> None:
    torch.manual_seed(0)
    out = create_head("flat", 16, TAX)(torch.randn(4, 16))
    p = {k: v.exp() for k, v in out.items()}
    assert torch.allclose(p["species"].sum(1), torch.ones(4), atol=1e-5)
    f1 = TAX.index(0, "F1")
    under = [TAX.index(2, s) for s in ("S1", "S2", "S3")]
    assert torch.allclose(p["family"][:, f1], p["species"][:, under].sum(1), atol=1e-5)
    s5 = TAX.index(2, "S5")  # hangs straight under F2: its mass is in no genus
    assert torch.allclose(p["genus"].sum(1) + p["species"][:, s5], torch.ones(4), atol=1e-5)


def test_a_local_weights_file_is_loaded_without_pretrained_true(synthetic_store: Path, tmp_path: Path) -> None:
    from taxotrain.config import load_config
    from taxotrain.data.store import Store
    from taxotrain.tasks import create_task

    torch.manual_seed(3)
    source = timm.create_model("test_resnet", num_classes=0, in_chans=3)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    cfg = load_config(None, ["model.backbone=test_resnet", f"model.pretrained_path={tmp_path / 'w.pth'}",
                             "data.channels=3"])
    assert cfg.model.pretrained is False
    task = create_task(cfg, store=Store(synthetic_store))
    loaded = task.build_model().backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    restored = task.build_model(pretrained=False).backbone.state_dict()  # restoring a run: its checkpoint decides
    assert not all(torch.equal(restored[k], v) for k, v in source.state_dict().items())


def test_model_kwargs_reach_timm_for_images(synthetic_store: Path) -> None:
    from taxotrain.config import load_config
    from taxotrain.data.store import Store
    from taxotrain.tasks import create_task

    cfg = load_config(None, ["model.backbone=test_resnet", "model.kwargs={global_pool: max}"])
    model = create_task(cfg, store=Store(synthetic_store)).build_model(pretrained=False)
    assert model.backbone.global_pool.pool_type == "max"
