"""Every registered signal network: the shared interface (shapes, no NaN, a gradient for every parameter) and a few
optimiser steps on real GunPoint series lower the loss; unknown names and arguments are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aeon.datasets import load_from_ts_file

from taxotrain.config import ModelConfig
from taxotrain.data.signals import ucr_folder, znormalise
from taxotrain.models.classifier import build_classifier
from taxotrain.models.signal_nets import SignalNetError, create_signal_net, list_signal_nets
from taxotrain.taxonomy import Taxonomy

TAX = Taxonomy.from_rows(["class"], [("1",), ("2",)])


def _gunpoint(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = load_from_ts_file(str(ucr_folder("GunPoint") / "GunPoint_TRAIN.ts"))
    x = torch.from_numpy(np.stack([znormalise(s) for s in X[:n]]).astype(np.float32))
    return x, torch.from_numpy(np.asarray(y[:n]).astype(int) - 1)


# each network's embedding width with its paper's defaults (the docstrings say which): a changed default fails here
PAPER_WIDTHS = {"cnn_lstm": 64, "attention_cnn_lstm": 128, "resnet1d": 128, "inception_time": 128, "encoder": 64}


def test_the_issue_names_are_registered() -> None:
    assert list_signal_nets() == sorted(PAPER_WIDTHS)


@pytest.mark.parametrize("name", list_signal_nets())
def test_defaults_are_the_papers(name: str) -> None:
    net = create_signal_net(name)
    assert net.num_features == PAPER_WIDTHS[name]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    if name == "resnet1d":  # Wang et al. 2017: 3 blocks of kernels 8, 5, 3 with 64, 128, 128 filters
        assert [c.kernel_size[0] for c in convs if c.kernel_size[0] > 1][:3] == [8, 5, 3]
        assert sorted({c.out_channels for c in convs}) == [64, 128]
    if name == "inception_time":  # Ismail Fawaz et al. 2020: depth 6, kernels 39, 19, 9, 32 filters per branch
        assert sum(type(m).__name__ == "_Inception" for m in net.modules()) == 6
        assert {c.kernel_size[0] for c in convs} >= {39, 19, 9} and {c.out_channels for c in convs} >= {32}
    if name in ("cnn_lstm", "attention_cnn_lstm"):  # Capfinder: 3 conv blocks of 64 filters, kernel 5
        assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(64, 5)] * 3


@pytest.mark.parametrize("name", list_signal_nets())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_net_embeds_any_length_with_gradients(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    net = create_signal_net(name, in_chans=in_chans)
    for length in (37, 150):
        out = net(torch.randn(3, in_chans, length))
        assert out.shape == (3, net.num_features) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("name", list_signal_nets())
def test_a_few_steps_reduce_the_loss_on_gunpoint(name: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = _gunpoint()
    model = build_classifier(create_signal_net(name, in_chans=1), ModelConfig(backbone=name), TAX)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(input=x)["class"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_signal_model_has_the_same_interface_as_images() -> None:
    model = build_classifier(create_signal_net("resnet1d", in_chans=1, width=8), ModelConfig(backbone="resnet1d"), TAX)
    x = torch.randn(2, 1, 50)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features) == (2, 16)
    assert torch.allclose(model.forward_head(feats)["class"], model(input=x)["class"])


def test_unknown_names_and_arguments_are_one_line() -> None:
    with pytest.raises(SignalNetError, match="unknown signal network 'resnet2d'.*resnet1d.*multirocket_hydra"):
        create_signal_net("resnet2d")
    with pytest.raises(SignalNetError, match="minirocket needs the series length"):
        create_signal_net("minirocket")
    with pytest.raises(SignalNetError, match="model.kwargs for cnn_lstm"):
        create_signal_net("cnn_lstm", widht=3)
