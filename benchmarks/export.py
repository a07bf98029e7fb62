"""Milliseconds per image of an exported model on ONNX Runtime against PyTorch eager, at batch 1 and batch 64, on real
plankton test images prepared as `predict` prepares them (normalisation inside both models).

    python benchmarks/export.py [--run RUN]

With ``--run`` the run's best checkpoint is exported (its store is used); without, an untrained resnet18 of the
quick-start recipe on the plankton store (the speed does not depend on the weights). Ends with
``RATIO <ONNX Runtime ms / eager ms at batch 64>`` (lower is better) and a row in ``results.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from common import plankton_store, record
from taxotrain.config import load_config
from taxotrain.data.store import Store
from taxotrain.export import export_run
from taxotrain.run import load_run
from taxotrain.tasks import create_task
from taxotrain.training.module import save_checkpoint
from taxotrain_runtime.bundle import load_session


def untrained_run(folder: Path, store: Path) -> Path:
    """A run folder with an untrained quick-start model (resnet18, 48 px) of the plankton store."""
    cfg = load_config(None, [f"data.store={store}", "model.backbone=resnet18", "data.image_size=48"])
    task = create_task(cfg, store=Store(store))
    save_checkpoint(task, task.build_model(pretrained=False).eval(), folder / "checkpoints" / "best.ckpt",
                    store={"store": str(store)})
    return folder


def ms_per_image(fn: object, batches: list[np.ndarray], repeats: int) -> float:
    """Median over ``repeats`` rounds of milliseconds per image of ``fn`` over ``batches`` (after one warm-up)."""
    fn(batches[0])  # type: ignore[operator]
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in batches:
            fn(x)  # type: ignore[operator]
        rounds.append(1000 * (time.perf_counter() - start) / sum(len(b) for b in batches))
    return sorted(rounds)[len(rounds) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="run folder to export (default: an untrained quick-start model)")
    p.add_argument("--images", type=int, default=512, help="test images timed (default 512)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or untrained_run(Path(tmp) / "run", plankton_store())
        export_run(run_dir, Path(tmp) / "bundle", ["onnx"], records=64)
        run = load_run(run_dir)
        module = run.task.inference_module(run.model).eval()
        session = load_session(Path(tmp) / "bundle" / "model.onnx")
        stores = [run.config.data.store, run.store] if args.run else [plankton_store()]
        store = Store(next(p for p in stores if p and Path(p).is_file()))
        dataset = run.task.inference_dataset(store, "test")
        images = Subset(dataset, range(min(args.images, len(dataset))))
        threads = torch.get_num_threads()
        rows = {}
        for batch in (1, 64):
            batches = [b["input"].numpy() for b in DataLoader(images, batch_size=batch)]
            if batch == 1:
                batches = batches[:128]  # 128 single images are enough for a stable figure

            def eager(x: np.ndarray) -> object:
                with torch.no_grad():
                    return module(torch.from_numpy(x))

            rows[batch] = (ms_per_image(eager, batches, args.repeats),
                           ms_per_image(lambda x: session.run(None, {"input": x}), batches, args.repeats))
            print(f"batch {batch:>2}: PyTorch eager {rows[batch][0]:.3f} ms/image, ONNX Runtime "
                  f"{rows[batch][1]:.3f} ms/image ({torch.__version__}, {threads} threads)", flush=True)
    ratio = rows[64][1] / rows[64][0]
    record("export", f"batch 64: ORT {rows[64][1]:.3f} vs eager {rows[64][0]:.3f} ms/image; batch 1: ORT "
           f"{rows[1][1]:.3f} vs eager {rows[1][0]:.3f}", ratio, f"{run.config.model.backbone}, "
           f"{run.task.describe_input()}, {len(images)} plankton test images")


if __name__ == "__main__":
    main()
