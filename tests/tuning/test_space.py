"""The tune: section: search spaces validated against the config schema, with one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from taxotrain.config import ConfigError, load_config, nested
from taxotrain.tuning.study import make_pruner, make_sampler, suggest, trial_config

ROOT = Path(__file__).resolve().parents[2]
GOOD = ("tune.space={optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, "
        "model.backbone: {type: categorical, choices: [resnet18, test_resnet]}, "
        "data.batch_size: {type: int, low: 16, high: 64, step: 16}, optim.warmup_epochs: {type: float, low: 0, "
        "high: 1, step: 0.25}}")


def test_space_entries_parse_and_every_draw_is_a_valid_config() -> None:
    cfg = load_config(None, [GOOD, "run.dir=runs/s", "tune.max_epochs_per_trial=3"])
    study = optuna.create_study(sampler=make_sampler(cfg.tune, 0))
    for _ in range(12):
        trial = study.ask()
        params = suggest(trial, cfg.tune.space)
        tcfg = trial_config(cfg, params, trial.number)
        assert tcfg.optim.lr == params["optim.lr"] and 1e-4 <= tcfg.optim.lr <= 1e-2
        assert tcfg.data.batch_size in (16, 32, 48, 64) and tcfg.model.backbone in ("resnet18", "test_resnet")
        assert tcfg.optim.warmup_epochs in (0, 0.25, 0.5, 0.75, 1.0)
        assert tcfg.trainer.max_epochs == 3 and tcfg.run.dir == str(Path("runs/s") / "trials" / f"{trial.number:04d}")
        study.tell(trial, 0.0)


@pytest.mark.parametrize(("space", "names"), [
    ("{optim.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2}}", ["optim.learning_rate", "optim."]),
    ("{optim.lr: {type: float, low: 1.0e-2, high: 1.0e-4}}", ["tune.space.optim.lr", "swap"]),
    ("{optim.lr: {type: float, low: 0, high: 1.0e-2, log: true}}", ["tune.space.optim.lr", "low > 0"]),
    ("{model.backbone: {type: categorical, choices: []}}", ["tune.space.model.backbone", "choices"]),
    ("{optim.lr: {type: normal, low: 0, high: 1}}", ["tune.space.optim.lr.type", "categorical"]),
    ("{data.batch_size: {type: int, low: 0, high: 64}}", ["tune.space.data.batch_size", "greater than or equal to 1"]),
    ("{data.batch_size: {type: float, low: 8, high: 64}}", ["tune.space.data.batch_size", "integer"]),
    ("{data.batch_size: {type: int, low: 8.5, high: 64}}", ["tune.space.data.batch_size", "whole"]),
    ("{optim.name: {type: categorical, choices: [adamw, adam]}}", ["tune.space.optim.name", "'adam'"]),
    ("{optim: {lr: {type: float, low: 1, high: 2}}}", ["'optim'", "dotted key"]),
    ("{run.dir: {type: categorical, choices: [a, b]}}", ["tune.space.run.dir", "cannot be searched"]),
    ("{optim.lr: {type: float, low: 1.0e-3}}", ["tune.space.optim.lr", "'high'"]),
])
def test_bad_space_is_one_line_naming_the_key(space: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"tune.space={space}"])
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in names), msg


def test_bad_budget_names_the_keys() -> None:
    with pytest.raises(ConfigError, match="min_epochs.*max_epochs_per_trial"):
        load_config(None, ["tune.min_epochs=4", "tune.max_epochs_per_trial=2"])
    with pytest.raises(ConfigError, match="'tune.strategy'.*hyperband"):
        load_config(None, ["tune.strategy=bohb"])


def test_strategies_pick_sampler_and_pruner() -> None:
    cfg = load_config(None, ["tune.strategy=hyperband", "tune.factor=2", "tune.max_epochs_per_trial=8",
                             "tune.min_epochs=2"])
    pruner = make_pruner(cfg.tune)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 8, 2)
    assert isinstance(make_sampler(cfg.tune, 0), optuna.samplers.TPESampler)
    random = load_config(None, ["tune.strategy=random"]).tune
    assert isinstance(make_sampler(random, 0), optuna.samplers.RandomSampler)
    assert isinstance(make_pruner(random), optuna.pruners.NopPruner)


def test_best_params_shape_is_what_fit_params_takes(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "best_params.yaml"
    path.write_text("# comment\n" + yaml.safe_dump(nested({"optim.lr": 0.003, "model.backbone": "test_resnet",
                                                              "data.augment.hflip": 0.0})))
    cfg = load_config(ROOT / "configs" / "tune_plankton.yaml", ["trainer.max_epochs=7"], params=path)
    assert (cfg.optim.lr, cfg.model.backbone, cfg.data.augment.hflip, cfg.trainer.max_epochs) == (
        0.003, "test_resnet", 0.0, 7)


@pytest.mark.parametrize("name", ["tune_ucr.yaml", "tune_plankton.yaml"])
def test_tuning_recipes_parse_and_take_overrides(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name, ["tune.max_trials=5", "tune.strategy=random",
                                                "tune.max_epochs_per_trial=2"])
    assert (cfg.tune.max_trials, cfg.tune.strategy, cfg.tune.max_epochs_per_trial) == (5, "random", 2)
    assert len(cfg.tune.space) >= 3


def test_tune_without_space_or_store_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from taxotrain.cli import main

    assert main(["tune", f"run.dir={tmp_path / 'a'}"]) == 2
    assert "tune.space is empty" in capsys.readouterr().err
    space = "tune.space={optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}"
    assert main(["tune", f"run.dir={tmp_path / 'a'}", space, f"data.store={tmp_path / 'none.h5'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.h5 not found" in err
    assert not (tmp_path / "a").exists()


def test_model_specific_widths_are_searchable_through_model_kwargs() -> None:
    cfg = load_config(ROOT / "configs" / "tune_ucr.yaml", [
        "tune.space={model.kwargs.width: {type: categorical, choices: [16, 64]}, model.kwargs.depth: "
        "{type: int, low: 2, high: 4}}"])
    trial = trial_config(cfg, {"model.kwargs.width": 64, "model.kwargs.depth": 3}, 0)
    assert trial.model.kwargs == {"width": 64, "kernels": [7, 5, 3], "depth": 3}  # merged into the recipe's kwargs
