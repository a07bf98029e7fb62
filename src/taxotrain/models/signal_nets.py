"""1-D signal networks: a registry, one ``create_signal_net`` and five small ``nn.Module``s.

Every network maps a batch of series ``[B, C, L]`` to a pooled embedding ``[B, num_features]``; the taxotrain heads
turn that into logits per rank, exactly as for image backbones. The ROCKET family (``minirocket``, ``multirocket``,
``hydra``, ``multirocket_hydra``) is fitted in closed form, not by gradient: it lives in ``models/rocket.py`` and
``create_signal_net`` builds it too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from taxotrain.errors import TaxotrainError
from taxotrain.registry import Registry


class SignalNetError(TaxotrainError):
    """Unknown signal network or arguments it does not take."""


NETS: Registry[Callable[..., nn.Module]] = Registry("signal network", error=SignalNetError)


def register_signal_net(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that makes a network available as ``model.backbone: <name>`` for ``task: signal``."""
    return NETS.register(name)


def list_signal_nets() -> list[str]:
    """Names of the registered signal networks."""
    return NETS.names()


def create_signal_net(name: str, in_chans: int = 1, length: int | None = None, seed: int = 0,
                      **kwargs: object) -> nn.Module:
    """Build the signal backbone registered as ``name``: a network, or a ROCKET-family model (``models/rocket.py``,
    which needs the series ``length`` and takes ``seed``); ``None`` keyword arguments keep the defaults.

    Example:
        >>> net = create_signal_net("resnet1d", in_chans=1, width=32)
        >>> net(torch.randn(2, 1, 100)).shape[1] == net.num_features
        True
    """
    from taxotrain.models.rocket import create_rocket, list_rocket_models

    if name in list_rocket_models():
        if length is None:
            raise SignalNetError(f"{name} needs the series length (the spec's) to be built")
        return create_rocket(name, in_chans, length, seed, **{k: v for k, v in kwargs.items() if v is not None})
    if name not in NETS:  # the message also lists the ROCKET family
        raise SignalNetError(f"unknown signal network '{name}'; for task: signal, model.backbone takes one of: "
                             f"{', '.join(list_signal_nets() + list_rocket_models())}")
    try:
        return NETS.create(name, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise SignalNetError(f"model.kwargs for {name}: {exc}") from exc


def _conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, k, padding="same", bias=False), nn.BatchNorm1d(cout), nn.ReLU())


@register_signal_net("cnn_lstm")
class CNNLSTM(nn.Module):
    """Capfinder's default classifier (Niazi et al., Capfinder, 2024): convolution blocks (conv, batch norm, ReLU,
    max-pool, dropout) that shorten the series, then an LSTM whose last hidden state is the embedding.

    Defaults: 3 conv blocks of 64 filters, kernel 5, pool 2, dropout 0.1; one LSTM layer of 64 units.
    """

    def __init__(self, in_chans: int = 1, filters: int = 64, kernel: int = 5, conv_layers: int = 3,
                 hidden: int = 64, lstm_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_chans
        for _ in range(conv_layers):
            blocks += [_conv_bn(cin, filters, kernel), nn.MaxPool1d(2, ceil_mode=True), nn.Dropout(dropout)]
            cin = filters
        self.conv = nn.Sequential(*blocks)
        self.lstm = nn.LSTM(filters, hidden, num_layers=lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.num_features = hidden

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """LSTM outputs ``[B, T, hidden]`` over the conv-shortened series."""
        return self.lstm(self.conv(x).transpose(1, 2))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(x)[:, -1]


@register_signal_net("attention_cnn_lstm")
class AttentionCNNLSTM(CNNLSTM):
    """Capfinder's CNN-LSTM with attention pooling (Niazi et al., Capfinder, 2024; additive attention as in Bahdanau
    et al. 2015): a learnt score per time step weights the LSTM outputs instead of keeping only the last one.

    Defaults: those of ``cnn_lstm``, a bidirectional LSTM (embedding = 2 x 64) and an attention layer of 64 units.
    """

    def __init__(self, in_chans: int = 1, filters: int = 64, kernel: int = 5, conv_layers: int = 3,
                 hidden: int = 64, lstm_layers: int = 1, dropout: float = 0.1, attention: int = 64) -> None:
        super().__init__(in_chans, filters, kernel, conv_layers, hidden, lstm_layers, dropout)
        self.lstm = nn.LSTM(filters, hidden, num_layers=lstm_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.score = nn.Sequential(nn.Linear(2 * hidden, attention), nn.Tanh(), nn.Linear(attention, 1))
        self.num_features = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(x)
        weights = self.score(seq).softmax(dim=1)
        return (weights * seq).sum(1)


class _ResBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for i, k in enumerate(kernels):
            layers += [nn.Conv1d(c, cout, k, padding="same", bias=False), nn.BatchNorm1d(cout)]
            if i < len(kernels) - 1:
                layers.append(nn.ReLU())
            c = cout
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


@register_signal_net("resnet1d")
class ResNet1d(nn.Module):
    """The time-series ResNet of Wang, Yan and Oates, "Time series classification from scratch with deep neural
    networks: a strong baseline" (IJCNN 2017): three residual blocks of three convolutions (kernels 8, 5, 3, batch
    norm, ReLU) with a 1x1 shortcut, then global average pooling.

    Defaults: the paper's widths 64, 128, 128 (``width`` = 64 scales them all).
    """

    def __init__(self, in_chans: int = 1, width: int = 64, kernels: tuple[int, ...] = (8, 5, 3)) -> None:
        super().__init__()
        widths = (width, 2 * width, 2 * width)
        blocks, c = [], in_chans
        for w in widths:
            blocks.append(_ResBlock1d(c, w, tuple(kernels)))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(-1)


class _Inception(nn.Module):
    def __init__(self, cin: int, filters: int, kernels: tuple[int, ...], bottleneck: int) -> None:
        super().__init__()
        self.bottleneck = nn.Conv1d(cin, bottleneck, 1, bias=False) if cin > 1 else nn.Identity()
        b = bottleneck if cin > 1 else cin
        self.convs = nn.ModuleList(nn.Conv1d(b, filters, k, padding="same", bias=False) for k in kernels)
        self.pool = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(cin, filters, 1, bias=False))
        self.bn = nn.BatchNorm1d(filters * (len(kernels) + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(x)
        return F.relu(self.bn(torch.cat([c(z) for c in self.convs] + [self.pool(x)], dim=1)))


@register_signal_net("inception_time")
class InceptionTime(nn.Module):
    """One InceptionTime network (Ismail Fawaz et al., "InceptionTime: finding AlexNet for time series
    classification", Data Min. Knowl. Disc. 2020): inception modules (bottleneck, three parallel convolutions of
    decreasing length and a max-pool branch) with a residual connection every three modules, then global average
    pooling. The paper ensembles five such networks; train five seeds to do the same.

    Defaults: the paper's depth 6, 32 filters per branch, bottleneck 32, kernels 39, 19, 9.
    """

    def __init__(self, in_chans: int = 1, filters: int = 32, depth: int = 6, bottleneck: int = 32,
                 kernels: tuple[int, ...] = (39, 19, 9)) -> None:
        super().__init__()
        out = filters * (len(kernels) + 1)
        self.modules_ = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        c, res_c = in_chans, in_chans
        for d in range(depth):
            self.modules_.append(_Inception(c, filters, tuple(kernels), bottleneck))
            c = out
            if d % 3 == 2:
                self.shortcuts.append(nn.Sequential(nn.Conv1d(res_c, out, 1, bias=False), nn.BatchNorm1d(out)))
                res_c = out
        self.num_features = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x
        for d, module in enumerate(self.modules_):
            x = module(x)
            if d % 3 == 2:
                x = F.relu(x + self.shortcuts[d // 3](res))
                res = x
        return x.mean(-1)


@register_signal_net("encoder")
class TransformerEncoder1d(nn.Module):
    """A transformer encoder for series (Vaswani et al. 2017, applied to time series as in Zerveas et al., KDD 2021):
    non-overlapping patches embedded by a strided convolution, learnt positions, pre-norm encoder layers and mean
    pooling over patches.

    Defaults: patches of 8 samples, model width 64, 4 heads, 2 layers, feed-forward 128, dropout 0.1, up to 4096
    patches.
    """

    def __init__(self, in_chans: int = 1, patch: int = 8, dim: int = 64, heads: int = 4, layers: int = 2,
                 ff: int = 128, dropout: float = 0.1, max_patches: int = 4096) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv1d(in_chans, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, max_patches, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (-x.shape[-1]) % self.patch
        tokens = self.embed(F.pad(x, (0, pad))).transpose(1, 2)
        if tokens.shape[1] > self.pos.shape[1]:
            raise ValueError(f"series of {x.shape[-1]} samples gives {tokens.shape[1]} patches, more than "
                             f"max_patches={self.pos.shape[1]}; raise model.kwargs.patch or max_patches")
        return self.norm(self.encoder(tokens + self.pos[:, : tokens.shape[1]])).mean(1)
