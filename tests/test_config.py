"""Config schema, YAML + dotted overrides, one-line errors, the commented template and the generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taxotrain.cli import main
from taxotrain.config import Config, ConfigError, all_keys, commented_yaml, load_config, markdown_reference

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_parse_as_yaml_values() -> None:
    cfg = load_config(None, ["model.backbone=resnet50", "optim.lr=3e-4", "trainer.gradient_clip_val=null",
                             "data.augment.hflip=0", "loss.rank_weights={group: 0.5}"])
    assert cfg.model.backbone == "resnet50"
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.trainer.gradient_clip_val is None
    assert cfg.data.augment.hflip == 0
    assert cfg.loss.rank_weights == {"group": 0.5}


def test_file_then_params_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model:\n  backbone: resnet34\noptim:\n  lr: 0.1\n")
    (tmp_path / "p.yaml").write_text("optim:\n  lr: 0.01\n")
    cfg = load_config(tmp_path / "a.yaml", ["optim.weight_decay=0"], params=tmp_path / "p.yaml")
    assert (cfg.model.backbone, cfg.optim.lr, cfg.optim.weight_decay) == ("resnet34", 0.01, 0)


def test_unknown_key_is_one_line_naming_key_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.backbon=resnet50"])
    msg = str(err.value)
    assert "model.backbon" in msg and "did you mean 'model.backbone'" in msg and "\n" not in msg


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("trainer:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'trainer\.epochs'.*max_epochs"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(("override", "key"), [("optim.name=adam", "optim.name"), ("trainer.max_epochs=0",
                         "trainer.max_epochs"), ("data.image_size=big", "data.image_size")])
def test_bad_value_names_key_and_allowed(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_literal_error_lists_choices() -> None:
    with pytest.raises(ConfigError, match="adamw.*sgd"):
        load_config(None, ["optim.name=adam"])


def test_init_config_template_is_the_defaults_and_commented(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-config", "--task", "image"]) == 0
    text = capsys.readouterr().out
    assert Config.model_validate(yaml.safe_load(text)) == Config()
    assert "# any timm model name" in text
    keys = all_keys()
    assert len(keys) > 30 and all(k.split(".")[-1] + ":" in text for k in keys)


def test_cli_bad_override_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "trainer.max_epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trainer.max_epoch" in err


def test_print_config_shows_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--print-config", "model.backbone=convnext_tiny"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["backbone"] == "convnext_tiny"


def test_missing_config_file_is_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--config", "nope.yaml"]) == 2
    assert "nope.yaml not found" in capsys.readouterr().err


def test_docs_config_reference_is_current() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    assert doc == markdown_reference(), "regenerate with: python -m taxotrain.docs > docs/config.md"


def test_every_shipped_recipe_parses() -> None:
    recipes = sorted((ROOT / "configs").glob("*.yaml"))
    assert recipes, "configs/ should hold at least one recipe"
    for path in recipes:
        load_config(path)


def test_commented_yaml_round_trips_non_defaults() -> None:
    cfg = load_config(None, ["data.augment.policy=randaugment", "model.pretrained_path=/x.pth"])
    assert Config.model_validate(yaml.safe_load(commented_yaml(instance=cfg))) == cfg


def test_yaml_map_without_space_gets_a_hint() -> None:
    with pytest.raises(ConfigError, match="space after each colon"):
        load_config(None, ["data.hide_labels={class:0.3}"])
    assert load_config(None, ["data.hide_labels={class: 0.3}"]).data.hide_labels == {"class": 0.3}
