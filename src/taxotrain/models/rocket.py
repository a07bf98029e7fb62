"""The ROCKET family as signal backbones: random convolution features fitted in closed form, not by gradient.

``model.backbone`` takes ``minirocket`` (Dempster et al., KDD 2021), ``multirocket`` (Tan et al., 2022), ``hydra``
(Dempster et al., 2023) and ``multirocket_hydra`` (Hydra's and MultiRocket's features side by side, as in aeon's
``MultiRocketHydraClassifier``). Each is aeon's transform followed by the scaler aeon's classifier puts before its
ridge (``StandardScaler(with_mean=False)`` for MiniRocket and MultiRocket, the sparse scaler for Hydra, both for
MultiRocket-Hydra); ``training/closed_form.py`` fits a ridge classifier per rank on top, as the head.

A fitted backbone keeps what aeon fitted (dilations, biases, channel combinations, Hydra's kernels) and the scaler's
statistics as tensors in the state dict: checkpoints hold arrays only, load with ``weights_only=True``, and the
arrays are handed back to aeon's own transform at prediction time, so the features are aeon's to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from taxotrain.errors import TaxotrainError
from taxotrain.registry import Registry

ROCKET: Registry[Callable[..., RocketFeatures]] = Registry("ROCKET-family model", ordered=True)
DISPLAY_NAMES = {"minirocket": "MiniRocket", "hydra": "Hydra", "multirocket": "MultiRocket",
                 "multirocket_hydra": "MultiRocket-Hydra"}
MIN_LENGTH = 9  # the kernels are 9 taps long


class RocketError(TaxotrainError):
    """A ROCKET-family model asked to do what it cannot (e.g. series shorter than its kernels)."""


def register_rocket(name: str) -> Callable[[Callable[..., RocketFeatures]], Callable[..., RocketFeatures]]:
    """Decorator that makes a closed-form feature model available as ``model.backbone: <name>`` for signals."""

    return ROCKET.register(name)


def list_rocket_models() -> list[str]:
    """Names of the registered ROCKET-family models, in the order the bake-off ranks them (weakest first)."""
    return ROCKET.names()


def min_length(name: str) -> int:
    """The shortest series model ``name`` takes: its kernels' length, plus one for the models that also read the
    first difference (MultiRocket)."""
    return int(getattr(ROCKET.get(name), "min_length", MIN_LENGTH)) if name in ROCKET else MIN_LENGTH


def create_rocket(name: str, in_chans: int, length: int, seed: int = 0, **kwargs: Any) -> RocketFeatures:
    """An unfitted ROCKET-family backbone for series ``[in_chans, length]``."""
    minimum = min_length(name)
    if length < minimum:
        raise RocketError(f"{name} needs series of at least {minimum} points (its kernels are {MIN_LENGTH} long"
                          + (", and it also reads the first difference" if minimum > MIN_LENGTH else "")
                          + f"); the store's are {length}: pad them at prepare, or use a network")
    try:
        return ROCKET.get(name)(in_chans=in_chans, length=length, seed=seed, **kwargs)
    except TypeError as exc:
        raise RocketError(f"model.kwargs for {name}: {exc}") from exc


class RocketFeatures(nn.Module):
    """Base of the closed-form backbones: ``fit(x)`` on the train series, then ``forward`` gives scaled features.

    Fitted arrays live in buffers named ``state_*``; their shapes come from the fit (e.g. how many channel
    combinations were drawn), so loading a state dict takes the shapes it finds.
    """

    closed_form = True
    min_length = MIN_LENGTH  # the shortest series it takes

    def __init__(self, in_chans: int, length: int, seed: int) -> None:
        super().__init__()
        self.in_chans, self.length, self.seed = in_chans, length, seed
        self.register_buffer("fitted", torch.tensor(False))
        self.num_features = 0

    # ---------------------------------------------------------------- fitted arrays as buffers
    def _put(self, name: str, value: np.ndarray | torch.Tensor) -> None:
        tensor = value.detach().cpu().clone() if isinstance(value, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(value).copy())
        self.register_buffer(f"state_{name}", tensor)

    def _get(self, name: str) -> np.ndarray:
        return getattr(self, f"state_{name}").cpu().numpy()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for key, value in state_dict.items():
            name = key.removeprefix(prefix)
            if key.startswith(prefix) and name.startswith("state_") and "." not in name:
                self.register_buffer(name, torch.empty_like(value))
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ---------------------------------------------------------------- the interface
    def fit(self, x: np.ndarray) -> None:
        """Fit the transform and the scaler on train series ``[N, C, L]`` (already standardised)."""
        self._fit(np.ascontiguousarray(x, dtype=np.float32))
        self.fitted.fill_(True)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the batch key's name)
        if not bool(self.fitted):
            raise RocketError(f"{type(self).__name__} is not fitted; `taxotrain fit` fits it on the train split")
        x = np.ascontiguousarray(input.detach().float().cpu().numpy())
        features = self._features(x)
        return torch.as_tensor(features, dtype=torch.float32).to(input.device)

    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _features(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---------------------------------------------------------------- scalers
    def _fit_standard(self, features: np.ndarray, name: str, with_mean: bool) -> np.ndarray:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler(with_mean=with_mean).fit(features)
        self._put(f"{name}_mean", scaler.mean_.astype(np.float32) if with_mean else
                  np.zeros(features.shape[1], np.float32))
        self._put(f"{name}_scale", scaler.scale_.astype(np.float32))
        return self._standard(features, name)

    def _standard(self, features: np.ndarray, name: str) -> np.ndarray:
        return (features - self._get(f"{name}_mean")) / self._get(f"{name}_scale")


def _threads() -> int:
    return max(1, torch.get_num_threads())


class _MiniRocket(RocketFeatures):
    """aeon's ``MiniRocket`` (``n_kernels`` features, default 10,000) + ``StandardScaler(with_mean=False)``."""

    def __init__(self, in_chans: int, length: int, seed: int, n_kernels: int = 10_000,
                 max_dilations_per_kernel: int = 32) -> None:
        super().__init__(in_chans, length, seed)
        self.n_kernels, self.max_dilations_per_kernel = n_kernels, max_dilations_per_kernel
        self.num_features = 84 * (max(84, n_kernels) // 84)

    def _transformer(self) -> Any:
        from aeon.transformations.collection.convolution_based import MiniRocket

        return MiniRocket(n_kernels=self.n_kernels, max_dilations_per_kernel=self.max_dilations_per_kernel,
                          n_jobs=_threads(), random_state=self.seed)

    def _fit(self, x: np.ndarray) -> None:
        transform = self._transformer().fit(x)
        for i, array in enumerate(transform.parameters):
            self._put(f"p{i}", array)
        self._fit_standard(transform.transform(x), "scaler", with_mean=False)

    def _features(self, x: np.ndarray) -> np.ndarray:
        transform = self._transformer()
        transform.parameters = tuple(self._get(f"p{i}") for i in range(5))
        transform.n_kernels_ = max(84, self.n_kernels)
        transform._n_jobs = _threads()
        transform.is_fitted = True
        return self._standard(transform.transform(x), "scaler")


class _MultiRocket(RocketFeatures):
    """aeon's ``MultiRocket`` (raw and first-difference series, 4 pooling operators; 49,728 features by default) +
    a standard scaler (``with_mean`` False as in aeon's ``MultiRocketClassifier``, True inside MultiRocket-Hydra)."""

    min_length = MIN_LENGTH + 1  # its first-difference series must still be as long as the kernels

    def __init__(self, in_chans: int, length: int, seed: int, n_kernels: int = 6_250,
                 max_dilations_per_kernel: int = 32, n_features_per_kernel: int = 4, with_mean: bool = False) -> None:
        super().__init__(in_chans, length, seed)
        self.n_kernels, self.max_dilations_per_kernel = n_kernels, max_dilations_per_kernel
        self.n_features_per_kernel, self.with_mean = n_features_per_kernel, with_mean
        self.num_features = 2 * n_features_per_kernel * 84 * (n_kernels // 84)

    def _transformer(self) -> Any:
        from aeon.transformations.collection.convolution_based import MultiRocket

        return MultiRocket(n_kernels=self.n_kernels, max_dilations_per_kernel=self.max_dilations_per_kernel,
                           n_features_per_kernel=self.n_features_per_kernel, n_jobs=_threads(),
                           random_state=self.seed)

    def _fit(self, x: np.ndarray) -> None:
        transform = self._transformer().fit(x)
        for part, params in (("a", transform.parameter), ("b", transform.parameter1)):
            self._put(f"{part}_count", np.asarray(len(params)))
            for i, array in enumerate(params):
                self._put(f"{part}{i}", array)
        self._fit_standard(transform.transform(x), "scaler", with_mean=self.with_mean)

    def _features(self, x: np.ndarray) -> np.ndarray:
        transform = self._transformer()
        transform.parameter, transform.parameter1 = (
            tuple(self._get(f"{part}{i}") for i in range(int(self._get(f"{part}_count")))) for part in ("a", "b"))
        transform.random_state_ = self.seed
        transform._n_jobs = _threads()
        transform.is_fitted = True
        return self._standard(transform.transform(x), "scaler")


class _Hydra(RocketFeatures):
    """aeon's ``HydraTransformer`` (``n_groups`` groups of ``n_kernels`` competing kernels per dilation, on the series
    and its first difference) + aeon's sparse scaler (square root, then standardised where non-zero)."""

    def __init__(self, in_chans: int, length: int, seed: int, n_kernels: int = 8, n_groups: int = 64,
                 max_num_channels: int = 8) -> None:
        super().__init__(in_chans, length, seed)
        self.n_kernels, self.n_groups, self.max_num_channels = n_kernels, n_groups, max_num_channels
        hydra = self._internal()
        self.num_features = hydra.num_dilations * hydra.divisor * 2 * hydra.h * hydra.k

    def _internal(self) -> Any:
        from aeon.transformations.collection.convolution_based._hydra import _HydraInternal

        return _HydraInternal(self.length, self.in_chans, k=self.n_kernels, g=self.n_groups,
                              max_num_channels=self.max_num_channels)

    def _fit(self, x: np.ndarray) -> None:
        from aeon.classification.convolution_based._hydra import _SparseScaler

        threads = torch.get_num_threads()
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed)  # aeon's HydraTransformer seeds torch's global generator the same way
            hydra = self._internal()
        finally:
            torch.random.set_rng_state(state)
            torch.set_num_threads(threads)
        self._put("W", hydra.W)
        for i, idx in enumerate(hydra.idx):
            self._put(f"idx{i}", idx)
        scaler = _SparseScaler()
        scaler.fit(self._raw(x, hydra))
        self._put("mu", scaler.mu)
        self._put("sigma", scaler.sigma)

    def _raw(self, x: np.ndarray, hydra: Any) -> torch.Tensor:
        with torch.no_grad():
            return hydra.batch(torch.from_numpy(x).float())

    def _features(self, x: np.ndarray) -> np.ndarray:
        from aeon.classification.convolution_based._hydra import _SparseScaler

        with torch.random.fork_rng(devices=[]):  # building aeon's module draws kernels, overwritten just below
            hydra = self._internal()
        hydra.W = torch.from_numpy(self._get("W"))
        hydra.idx = [torch.from_numpy(self._get(f"idx{i}")) for i in range(hydra.num_dilations)]
        scaler = _SparseScaler()
        scaler.mu, scaler.sigma = torch.from_numpy(self._get("mu")), torch.from_numpy(self._get("sigma"))
        return scaler.transform(self._raw(x, hydra)).numpy()


class _MultiRocketHydra(RocketFeatures):
    """Hydra's sparse-scaled features beside MultiRocket's standardised ones, as aeon's ``MultiRocketHydraClassifier``
    (Dempster et al. 2023 found the pair the strongest of the family)."""

    min_length = MIN_LENGTH + 1

    def __init__(self, in_chans: int, length: int, seed: int, n_kernels: int = 8, n_groups: int = 64) -> None:
        super().__init__(in_chans, length, seed)
        self.hydra = _Hydra(in_chans, length, seed, n_kernels=n_kernels, n_groups=n_groups)
        self.multirocket = _MultiRocket(in_chans, length, seed, with_mean=True)
        self.num_features = self.hydra.num_features + self.multirocket.num_features

    def _fit(self, x: np.ndarray) -> None:
        self.hydra.fit(x)
        self.multirocket.fit(x)

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.hydra._features(x), self.multirocket._features(x)], axis=1)


register_rocket("minirocket")(_MiniRocket)
register_rocket("hydra")(_Hydra)
register_rocket("multirocket")(_MultiRocket)
register_rocket("multirocket_hydra")(_MultiRocketHydra)
