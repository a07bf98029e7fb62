"""task: embedding: margin losses through the real CLI on real plankton, class centres in their own optimizer group,
config keys refused where they do nothing, and probabilities that are the softmax of the scaled cosine."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taxotrain.cli import main
from taxotrain.config import ConfigError, load_config
from taxotrain.data.store import Store
from taxotrain.run import load_run
from taxotrain.tasks import create_task


def test_an_embedding_fit_lowers_its_loss_with_centres_at_ten_times_the_lr(embedding_run: Path) -> None:
    with (embedding_run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train/loss"]) for r in rows]
    assert len(rows) == 8 and losses[-1] < 0.6 * losses[0], losses
    assert all(0 <= float(r["val/class/top1"]) <= 1 for r in rows)

    ckpt = torch.load(embedding_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["taxotrain"]["task"] == "embedding"
    centres = {k: v for k, v in ckpt["state_dict"].items() if ".margin.heads." in k}
    tax = load_run(embedding_run).taxonomy
    assert [tuple(centres[f"model.head.margin.heads.{r}.weight"].shape) for r in range(3)] == \
        [(n, 96) for n in tax.num_classes]  # test_resnet's pooled width, no projection
    groups = ckpt["optimizer_states"][0]["param_groups"]
    lr = load_config(embedding_run / "config.yaml").optim.lr
    assert [len(g["params"]) for g in groups if math.isclose(g["initial_lr"], 10 * lr)] == [3]  # one per rank
    assert all(math.isclose(g["initial_lr"], lr) for g in groups[:-1])
    assert sum(len(g["params"]) for g in groups) == sum(1 for k in ckpt["state_dict"] if k.startswith("model.")
                                                        and "running_" not in k and "num_batches" not in k
                                                        and "prior_offset" not in k and "temperature" not in k)


def test_a_loaded_run_gives_the_softmax_of_the_scaled_cosine(embedding_run: Path, heldout_store: Path) -> None:
    run = load_run(embedding_run)
    x = torch.stack([run.task.inference_dataset(Store(heldout_store), "test")[i]["input"] for i in range(6)])
    module = run.task.inference_module(run.model)
    probs = run.task.predict_step(module, {"input": x}, "none")
    emb = run.task.embed_step(module, {"input": x})
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    for r, rank in enumerate(run.taxonomy.ranks):
        head = run.model.head.margin.heads[str(r)]
        cos = torch.from_numpy(emb) @ F.normalize(head.weight.detach(), dim=-1).T
        assert head.scale == 64.0
        assert np.allclose(probs[rank], (head.scale * cos).softmax(-1).numpy(), atol=1e-4)


@pytest.mark.parametrize("settings, kind, values", [
    (["loss.margin=cosface", "loss.m3=0.2"], "CosFace", {"m1": 1.0, "m2": 0.0, "m3": 0.2}),
    (["loss.margin=arcface"], "ArcFace", {"m1": 1.0, "m2": 0.5, "m3": 0.0}),  # the default angle, in radians
    (["loss.margin=combined", "loss.m1=1.1", "loss.m2=0.3", "loss.m3=0.1", "loss.scale=30"], "MarginHead",
     {"m1": 1.1, "m2": 0.3, "m3": 0.1, "scale": 30.0}),
    (["loss.margin=subcenter_arcface", "loss.sub_centers=2", "loss.sample_rate=0.5"], "SubCenterArcFace",
     {"sub_centers": 2, "sample_rate": 0.5}),
])
def test_margin_settings_reach_every_rank_head(settings: list[str], kind: str, values: dict[str, float],
                                               plankton_store: Path) -> None:
    cfg = load_config(None, ["task=embedding", f"data.store={plankton_store}", "model.backbone=test_resnet",
                             "data.image_size=32", "model.embed_dim=24", "loss.coarse_weight=0.5", *settings])
    model = create_task(cfg, store=Store(plankton_store)).build_model(pretrained=False)
    assert model.num_features == 24 and model.margin.weights == [0.5, 0.5, 1.0]
    for head in model.margin.heads.values():
        assert type(head).__name__ == kind
        assert all(getattr(head, k) == pytest.approx(v) for k, v in values.items())
        assert head.weight.shape[1] == 24 * 1 and head.weight.shape[0] % head.sub_centers == 0


@pytest.mark.parametrize("overrides, says", [
    (["loss.margin=cosface"], "does nothing for task: image"),
    (["task=signal", "optim.centre_lr_scale=5"], "does nothing for task: signal"),
    (["task=embedding", "mix.mixup_alpha=0.2"], "does nothing for task: embedding"),
    (["task=embedding", "loss.label_smoothing=0.1"], "does nothing for task: embedding"),
    (["task=embedding", "loss.m3=0.2"], "loss.m3 is a setting of loss.margin cosface and combined"),
    (["task=embedding", "loss.margin=cosface", "loss.sub_centers=3"], "loss.sub_centers is a setting"),
    (["task=embedding", "loss.m2=4"], "loss.m2"),
])
def test_settings_that_do_nothing_are_one_line_errors(overrides: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value)


def test_init_config_still_defaults_to_image_and_prints_embedding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-config"]) == 0
    assert "task: image" in capsys.readouterr().out
    assert main(["init-config", "--task", "embedding"]) == 0
    text = capsys.readouterr().out
    assert "task: embedding" in text and "margin: arcface" in text and "centre_lr_scale: 10.0" in text


def test_an_embedding_run_exports_and_its_bundle_predicts_like_the_run(embedding_run: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert main(["export", str(embedding_run), "--out", str(bundle), "--records", "16"]) == 0  # parity-checked
    spec = json.loads((bundle / "spec.json").read_text())
    assert spec["task"] == "embedding" and spec["outputs"][-1] == "embedding"
    files = Store(load_run(embedding_run).config.data.store).paths[:6]  # real plankton images, read in place
    rows = {}
    for name, target in (("run", embedding_run), ("bundle", bundle)):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", str(target), *files, "--out", str(out), "--tta", "none"]) == 0
        with out.open(newline="") as fh:
            rows[name] = list(csv.DictReader(fh))
    assert [r["class"] for r in rows["run"]] == [r["class"] for r in rows["bundle"]]
    assert np.allclose([float(r["class_score"]) for r in rows["run"]],
                       [float(r["class_score"]) for r in rows["bundle"]], atol=1e-4)
