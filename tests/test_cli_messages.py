"""What the commands say: allowed values in init-config, a shell-quoted next step, the demo's help, and a training
split just over one batch trained whole."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from taxotrain.cli import main
from tests.conftest import TINY


def test_init_config_lists_the_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-config"]) == 0
    text = capsys.readouterr().out
    assert "name: adamw  # optimizer (allowed: adamw, sgd)" in text
    precision = next(line for line in text.splitlines() if line.strip().startswith("precision:"))
    assert "bf16-mixed" in precision and "16-mixed" in precision and "32-true" in precision
    assert main(["fit", "trainer.precision=17"]) == 2
    assert "trainer.precision" in capsys.readouterr().err


def test_the_next_step_is_a_command_that_can_be_pasted(synthetic_store: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "rün dir"
    assert main(["fit", f"data.store={synthetic_store}", f"run.dir={run}", "trainer.max_epochs=1", *TINY]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    command = hint.split("next: ", 1)[1]
    assert shlex.split(command) == ["taxotrain", "evaluate", str(run)]


def test_demo_help_mentions_both_halves(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "OSULeaf" in text and "signal" in text and "synthetic" in text


def test_a_last_batch_of_at_least_half_a_batch_is_trained(synthetic_store: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from taxotrain.config import load_config
    from taxotrain.data.store import Store
    from taxotrain.tasks import create_task
    from taxotrain.training.datamodule import TaskDataModule, drops_last_batch

    assert not drops_last_batch(120, 64)  # the case: 120 records at batch 64 train 120, not 64
    assert drops_last_batch(180, 16) and drops_last_batch(129, 64) and not drops_last_batch(128, 64)
    store = Store(synthetic_store)
    n = len(store.splits["train"])
    for batch, expected in ((n // 2 + 4, n), (n - 2, n - 2)):  # a last batch over half a batch is kept, 2 are not
        cfg = load_config(None, [f"data.batch_size={batch}", *TINY[:2], "data.num_workers=0"])
        dm = TaskDataModule(create_task(cfg, store=store), store)
        seen = sum(len(b["input"]) for b in dm.train_dataloader())
        assert seen == expected, (batch, seen)
    assert "leaves out the last 2 of" in capsys.readouterr().out  # and says so


@pytest.mark.parametrize("command", ["fit", "tune"])
def test_a_config_error_comes_before_the_heavy_imports(command: str) -> None:
    import subprocess
    import sys

    code = (f"import sys; from taxotrain.cli import main; code = main([{command!r}, 'optim.lrr=1']); "
            "print(code, sorted(m for m in ('torch', 'lightning', 'timm', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2 []" and "did you mean 'optim.lr'" in out.stderr


def test_quoted_errors_are_cut_at_a_word_boundary() -> None:
    from taxotrain.errors import brief

    text = "Weights only load failed. " + "This file can not be opened because of reasons " * 10
    cut = brief(ValueError(text), 80)
    assert len(cut) <= 84 and cut.endswith(" ...") and text.startswith(cut[:-4])
    assert cut[:-4].split(" ")[-1] in text.split(" ")  # the last word is whole
    assert brief(ValueError("short\nsecond line")) == "short"
