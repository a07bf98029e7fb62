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


def test_multirocket_needs_one_point_more_than_its_kernels() -> None:
    # it also reads the first difference, one point shorter; aeon itself fails there with a broadcasting error
    for name in ("multirocket", "multirocket_hydra"):
        with pytest.raises(RocketError, match="at least 10 points"):
            create_rocket(name, 1, 9)
    for name in ("minirocket", "hydra"):
        create_rocket(name, 1, 9).fit(np.random.default_rng(0).normal(size=(12, 1, 9)).astype(np.float32))


def test_two_ranks_get_one_ridge_each_and_partly_known_records_count_where_known() -> None:
    # BasicMotions' 4 activities under 2 made-up groups (still / moving); a third of the records known only to group
    x, y, classes = _ucr("BasicMotions", "TRAIN")
    groups = {"standing": "still", "badminton": "moving", "running": "moving", "walking": "moving"}
    tax = Taxonomy.from_rows(["group", "class"], [(groups[c.lower()], c) for c in classes])
    group_of = np.array([tax.index(0, groups[c.lower()]) for c in classes])
    targets = np.stack([group_of[y[:, 0]], np.array([tax.index(1, classes[i]) for i in y[:, 0]])], axis=1)
    targets[::3, 1] = -1
    backbone = create_rocket("minirocket", in_chans=x.shape[1], length=x.shape[2], seed=0)
    model = build_classifier(backbone, ModelConfig(backbone="minirocket"), tax).eval()
    fitted = fit_closed_form(model, x, targets, tax)
    assert fitted["group"].records == len(x) and fitted["class"].records == int((targets[:, 1] >= 0).sum())
    x_test, y_test, _ = _ucr("BasicMotions", "TEST")
    with torch.no_grad():
        out = model(input=x_test)
    assert (out["group"].argmax(-1).numpy() == group_of[y_test[:, 0]]).mean() > 0.9
    assert (out["class"].argmax(-1).numpy() == np.array([tax.index(1, classes[i]) for i in y_test[:, 0]])).mean() > 0.9


@pytest.mark.parametrize("name", list_rocket_models())
def test_prediction_leaves_torchs_global_generator_alone(name: str) -> None:
    x = np.random.default_rng(0).normal(size=(8, 1, 50)).astype(np.float32)
    model = create_rocket(name, 1, 50)
    model.fit(x)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    model(input=torch.from_numpy(x))
    assert torch.equal(torch.rand(3), expected)  # a training loop's shuffling and augmentation stay reproducible
