"""Export: every head type and both tasks export to ONNX and TorchScript, reload, match PyTorch, and predict the same
CSV as the run; the runtime predicts without torch; a changed or foreign bundle is refused in one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taxotrain.cli import main
from taxotrain.config import load_config
from taxotrain.data.signals import ucr_folder
from taxotrain.data.store import Store
from taxotrain.export import ExportError, export_run
from taxotrain.models.heads import list_heads
from taxotrain.tasks import create_task
from taxotrain.training.module import save_checkpoint

SMALL = {"image": ["model.backbone=test_resnet", "data.image_size=32"], "signal": ["model.kwargs={width: 8}"]}


def _run(store: Path, folder: Path, task: str, head: str) -> Path:
    """A run folder holding an untrained model's checkpoint, written as the trainer writes them (no training: the
    export must match whatever weights it gets)."""
    cfg = load_config(None, [f"task={task}", f"data.store={store}", f"model.head={head}", *SMALL[task]])
    torch.manual_seed(0)
    t = create_task(cfg, store=Store(store))
    save_checkpoint(t, t.build_model(pretrained=False).eval(), folder / "checkpoints" / "best.ckpt",
                    store={"store": str(store)})
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _same_labels(a: list[dict[str, str]], b: list[dict[str, str]]) -> bool:
    labels = [k for k in a[0] if not k.endswith("_score") and k != "deepest_threshold"]
    return len(a) == len(b) and all(x[k] == y[k] for x, y in zip(a, b, strict=True) for k in labels)


@pytest.mark.parametrize("head", list_heads())
def test_every_head_exports_reloads_and_matches_pytorch(head: str, synthetic_store: Path, synthetic_set: tuple,
                                                         tmp_path: Path) -> None:
    run = _run(synthetic_store, tmp_path / "run", "image", head)
    exported = export_run(run, tmp_path / "bundle", ["onnx", "torchscript"], records=64)
    parity = exported.parity
    assert parity["split"] == "test" and parity["records"] == len(Store(synthetic_store).splits["test"])
    for fmt in ("onnx", "torchscript"):
        assert parity["formats"][fmt]["max_abs_diff"] <= 1e-4
        assert set(parity["formats"][fmt]["top1_agreement"].values()) == {1.0}
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.ts", "spec.json", "taxonomy.json", "rollup.json"}
    assert manifest["opset"] == 18 and "onnxruntime" in manifest["versions"] and manifest["parity"] == parity

    images, _ = synthetic_set
    folder = images / "triangles_red_striped"
    assert main(["predict", str(run), str(folder), "--out", str(tmp_path / "run.csv")]) == 0
    assert main(["predict", str(tmp_path / "bundle"), str(folder), "--out", str(tmp_path / "bundle.csv")]) == 0
    from taxotrain_runtime.cli import main as runtime_main

    assert runtime_main(["predict", str(tmp_path / "bundle"), str(folder), "--out", str(tmp_path / "rt.csv")]) == 0
    by_run, by_bundle, by_runtime = (_rows(tmp_path / f"{n}.csv") for n in ("run", "bundle", "rt"))
    assert _same_labels(by_run, by_bundle) and by_bundle == by_runtime  # the same CSV from all three


@pytest.mark.parametrize("head", list_heads())
def test_signal_runs_export_and_predict_the_same(head: str, gunpoint_store: Path, tmp_path: Path) -> None:
    run = _run(gunpoint_store, tmp_path / "run", "signal", head)
    exported = export_run(run, tmp_path / "bundle", ["onnx"], records=150)
    assert exported.parity["formats"]["onnx"]["max_abs_diff"] <= 1e-4
    ts = ucr_folder("GunPoint") / "GunPoint_TEST.ts"
    assert main(["predict", str(run), str(ts), "--out", str(tmp_path / "run.csv")]) == 0
    assert main(["predict", str(tmp_path / "bundle"), str(ts), "--out", str(tmp_path / "bundle.csv")]) == 0
    assert _same_labels(_rows(tmp_path / "run.csv"), _rows(tmp_path / "bundle.csv"))


def test_an_export_that_does_not_match_pytorch_fails_and_leaves_nothing(synthetic_store: Path,
                                                                       tmp_path: Path) -> None:
    run = _run(synthetic_store, tmp_path / "run", "image", "linear")
    with pytest.raises(ExportError, match="does not match PyTorch on .* test records.*nothing was kept"):
        export_run(run, tmp_path / "bundle", ["onnx"], records=16, tolerance=-1.0)  # no difference is small enough
    assert not (tmp_path / "bundle").exists()


def test_a_changed_or_foreign_bundle_is_refused(synthetic_store: Path, synthetic_set: tuple, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(synthetic_store, tmp_path / "run", "image", "linear")
    bundle = tmp_path / "bundle"
    export_run(run, bundle, ["onnx"], records=16)
    with pytest.raises(ExportError, match="not an empty folder"):
        export_run(run, bundle, ["onnx"], records=16)
    (tmp_path / "a_file").write_text("kept")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_run(run, tmp_path / "a_file", ["onnx"], records=16)
    assert (tmp_path / "a_file").read_text() == "kept"
    images, _ = synthetic_set
    spec = json.loads((bundle / "spec.json").read_text())
    spec["spec"]["image_size"] = 64
    (bundle / "spec.json").write_text(json.dumps(spec))
    assert main(["predict", str(bundle), str(images)]) == 2
    err = capsys.readouterr().err
    assert "spec.json differs from the file exported" in err and err.count("\n") == 1
    from taxotrain_runtime.cli import main as runtime_main

    assert runtime_main(["predict", str(tmp_path), str(images)]) == 2
    assert "not a taxotrain bundle" in capsys.readouterr().err


def _forge_spec(bundle: Path, change) -> None:
    """Change spec.json and re-sign it in the manifest (as a hand-edited or foreign bundle would be)."""
    import hashlib

    spec = json.loads((bundle / "spec.json").read_text())
    change(spec)
    (bundle / "spec.json").write_text(json.dumps(spec))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["spec.json"] = hashlib.sha256((bundle / "spec.json").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_malformed_spec_or_bad_option_is_one_line(synthetic_store: Path, synthetic_set: tuple, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from taxotrain_runtime.cli import main as runtime_main

    run = _run(synthetic_store, tmp_path / "run", "image", "linear")
    bundle = tmp_path / "bundle"
    export_run(run, bundle, ["onnx"], records=16)
    images, _ = synthetic_set
    with pytest.raises(SystemExit) as stop:
        runtime_main(["predict", str(bundle), str(images), "--batch-size", "0"])
    assert stop.value.code == 2 and "--batch-size and --topk take 1 or more" in capsys.readouterr().err
    _forge_spec(bundle, lambda spec: spec.pop("id_columns"))
    for predict in (main, runtime_main):
        assert predict(["predict", str(bundle), str(images)]) == 2
        err = capsys.readouterr().err
        assert "spec.json lacks id_columns" in err and err.count("\n") == 1, err
    _forge_spec(bundle, lambda spec: spec.update(task="no_such_task", id_columns=["path"]))
    assert main(["predict", str(bundle), str(images)]) == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err and "does not have" in err and err.count("\n") == 1, err


def test_the_runtime_predicts_without_torch(synthetic_store: Path, synthetic_set: tuple, tmp_path: Path) -> None:
    run = _run(synthetic_store, tmp_path / "run", "image", "linear")
    export_run(run, tmp_path / "bundle", ["onnx"], records=16)
    images, _ = synthetic_set
    # torch, timm, lightning and taxotrain made unimportable: the runtime must not need them
    code = ("import sys\nfor m in ('torch', 'timm', 'lightning', 'torchvision', 'taxotrain'): sys.modules[m] = None\n"
            "from taxotrain_runtime.cli import main\n"
            f"sys.exit(main(['predict', {str(tmp_path / 'bundle')!r}, {str(images)!r}, '--out', "
            f"{str(tmp_path / 'rt.csv')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(tmp_path / "rt.csv")
    assert len(rows) == sum(1 for p in images.rglob("*") if p.is_file() and p.suffix in (".jpg", ".txt")) - 1
    assert sum(bool(r["error"]) for r in rows) == 1 and all(r["species"] for r in rows if not r["error"])
