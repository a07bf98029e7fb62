"""The ROCKET family as closed-form backbones: aeon's features, fitted arrays that save and load without pickle,
and ridge heads whose probabilities are the ridge's scores at a temperature fitted on leave-one-out scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from aeon.datasets import load_from_ts_file
from aeon.transformations.collection.convolution_based import MiniRocket, MultiRocket
from sklearn.linear_model import RidgeClassifier

from taxotrain.config import ModelConfig
from taxotrain.data.signals import ucr_folder, znormalise
from taxotrain.models.classifier import build_classifier
from taxotrain.models.ridge import ABSENT, fit_closed_form, fit_ridge_rank
from taxotrain.models.rocket import RocketError, create_rocket, list_rocket_models
from taxotrain.taxonomy import Taxonomy


def _ucr(name: str, split: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """A real UCR/UEA split from the aeon wheel: z-normalised series ``[N, C, L]``, label indices, class names."""
    X, y = load_from_ts_file(str(ucr_folder(name) / f"{name}_{split}.ts"))
    names = sorted(set(y))
    x = np.stack([np.stack([znormalise(c) for c in s]) for s in X]).astype(np.float32)
    return torch.from_numpy(x), np.array([names.index(v) for v in y])[:, None], names


def _classifier(name: str, x: torch.Tensor, classes: list[str]) -> torch.nn.Module:
    tax = Taxonomy.from_rows(["class"], [(c,) for c in classes])
    backbone = create_rocket(name, in_chans=x.shape[1], length=x.shape[2], seed=3)
    return build_classifier(backbone, ModelConfig(backbone=name), tax).eval()


@pytest.mark.parametrize("name", list_rocket_models())
@pytest.mark.parametrize("dataset", ["GunPoint", "BasicMotions"])  # univariate, and 6 channels
def test_each_model_fits_saves_reloads_and_predicts_identically(name: str, dataset: str, tmp_path: Path) -> None:
    x, y, classes = _ucr(dataset, "TRAIN")
    x_test, y_test, _ = _ucr(dataset, "TEST")
    model = _classifier(name, x, classes)
    fit_closed_form(model, x, y, Taxonomy.from_rows(["class"], [(c,) for c in classes]))
    with torch.no_grad():
        probs = model(input=x_test)["class"].softmax(-1)
    assert model.backbone.num_features == model.forward_features(x_test[:2]).shape[1]
    assert (probs.argmax(-1).numpy() == y_test[:, 0]).mean() > 0.85  # both sets are easy for the whole family
    torch.save(model.state_dict(), tmp_path / "m.pt")
    again = _classifier(name, x, classes)  # a new, unfitted model: the fitted arrays come from the file alone
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(again(input=x_test)["class"].softmax(-1), probs)


@pytest.mark.parametrize("transform, name", [(MiniRocket, "minirocket"), (MultiRocket, "multirocket")])
def test_the_features_are_aeons(transform: type, name: str) -> None:
    x, _, classes = _ucr("GunPoint", "TRAIN")
    model = _classifier(name, x, classes)
    model.backbone.fit(x.numpy())
    ours = model.forward_features(x).numpy() * model.backbone._get("scaler_scale") + model.backbone._get(
        "scaler_mean")
    np.testing.assert_allclose(ours, transform(random_state=3).fit(x.numpy()).transform(x.numpy()), rtol=1e-5,
                               atol=1e-5)


def test_an_unfitted_model_and_too_short_series_are_one_line() -> None:
    with pytest.raises(RocketError, match="at least 9 points"):
        create_rocket("minirocket", 1, 8)
    with pytest.raises(RocketError, match="is not fitted"):
        create_rocket("hydra", 1, 50)(torch.randn(2, 1, 50))
    with pytest.raises(RocketError, match="model.kwargs for hydra"):
        create_rocket("hydra", 1, 50, n_kernelz=4)


def test_ridge_probabilities_are_the_ridge_scores_at_the_fitted_temperature() -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((60, 30)).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    features[:, 0] += 2 * labels  # learnable, not separable: the leave-one-out log loss has a finite minimum
    ridge = fit_ridge_rank(features, labels, 4)  # class 3 never appears in train
    reference = RidgeClassifier(alpha=ridge.alpha).fit(features, labels)
    logits = features @ ridge.weight.T + ridge.bias
    np.testing.assert_allclose(logits[:, :3] * ridge.temperature, reference.decision_function(features), rtol=1e-4,
                               atol=1e-4)
    assert (logits.argmax(1) == reference.predict(features)).all() and (ridge.bias[3] == ABSENT)
    assert 0 < ridge.temperature < 100 and 0 < ridge.loo_top1 < 1 and ridge.records == 60
    # leave-one-out: each record scored by a ridge fitted without it
    loo_correct = [RidgeClassifier(alpha=ridge.alpha).fit(np.delete(features, i, 0), np.delete(labels, i)).predict(
        features[i:i + 1])[0] == labels[i] for i in range(60)]
    assert ridge.loo_top1 == pytest.approx(np.mean(loo_correct))


def test_binary_and_unknown_labels() -> None:
    rng = np.random.default_rng(1)
    features = rng.standard_normal((40, 10)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(int)
    labels[:5] = -1  # unknown at this rank: left out
    ridge = fit_ridge_rank(features, labels, 2)
    reference = RidgeClassifier(alpha=ridge.alpha).fit(features[5:], labels[5:])
    logits = features @ ridge.weight.T + ridge.bias
    assert ridge.records == 35 and (logits.argmax(1) == reference.predict(features)).all()
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]) * ridge.temperature, reference.decision_function(features),
                               rtol=1e-4, atol=1e-4)
