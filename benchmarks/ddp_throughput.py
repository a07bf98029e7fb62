"""Training throughput of 2 DDP processes (gloo, on the CPU) against 1 process, on the plankton store, and why.

    python benchmarks/ddp_throughput.py [--batches 60]

Both fit the quick-start model (resnet18, 48 px, batch 64 per process) for ``--batches`` steps of one epoch; the
figure is training samples per second from ``metrics.csv`` (all processes together). Beside it: the time of one
gradient all-reduce of resnet18's size over gloo between 2 processes, which every DDP step pays. Ends with
``RATIO <2-process samples/s / 1-process samples/s>`` (on a machine with a core per process and more, above 1).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import plankton_store, record

FIT = ["model.backbone=resnet18", "data.image_size=48", "data.batch_size=64", "trainer.max_epochs=1",
       "trainer.limit_val_batches=1", "logging.mlflow=false", "logging.tensorboard=false", "trainer.progress=none",
       "trainer.accelerator=cpu", "trainer.early_stopping_patience=null"]


def fit_rate(store: Path, run: Path, batches: int, processes: int) -> float:
    """Training samples per second of a one-epoch fit of ``batches`` steps in ``processes`` processes."""
    extra = ["trainer.devices=2", "trainer.strategy=ddp"] if processes == 2 else []
    cmd = [sys.executable, "-m", "taxotrain.cli", "fit", f"data.store={store}", f"run.dir={run}",
           f"trainer.limit_train_batches={batches}", *FIT, *extra]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"})
    with (run / "metrics.csv").open(newline="") as fh:
        seconds = float(next(csv.DictReader(fh))["seconds"])
    return batches * 64 * processes / seconds


ALL_REDUCE = """
import os, sys, time, torch, torch.distributed as dist
rank = int(sys.argv[1]); n = int(sys.argv[2])
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=rank, world_size=2)
grad = torch.randn(n)
for _ in range(3):
    dist.all_reduce(grad)
t0 = time.perf_counter()
for _ in range(10):
    dist.all_reduce(grad)
if rank == 0:
    print((time.perf_counter() - t0) / 10)
dist.destroy_process_group()
"""


def all_reduce_seconds(numel: int) -> float:
    """Seconds of one all-reduce of ``numel`` float32 values between 2 gloo processes on this machine."""
    procs = [subprocess.Popen([sys.executable, "-c", ALL_REDUCE, str(r), str(numel)], stdout=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    out = [p.communicate(timeout=300)[0] for p in procs]
    return float(out[0].strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    import timm

    store = plankton_store()
    numel = sum(p.numel() for p in timm.create_model("resnet18", num_classes=121).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for processes in (1, 2, 1, 2):  # alternating, each setting's best of two
            t0 = time.time()
            rate = fit_rate(store, Path(tmp) / f"r{processes}-{t0:.0f}", args.batches, processes)
            rates[processes] = max(rates.get(processes, 0.0), rate)
            print(f"{processes} process(es): {rate:.0f} training samples/s", flush=True)
    reduce_s = all_reduce_seconds(numel)
    step_s = 64 * 2 / rates[2]
    print(f"one all-reduce of resnet18's {numel / 1e6:.1f}M gradients over gloo: {reduce_s * 1000:.0f} ms, "
          f"{100 * reduce_s / step_s:.0f}% of a 2-process step ({step_s * 1000:.0f} ms)")
    ratio = rates[2] / rates[1]
    record("ddp_throughput", f"samples/s 1 process {rates[1]:.0f}, 2 processes {rates[2]:.0f}", ratio,
           f"all-reduce {reduce_s * 1000:.0f} ms of a {step_s * 1000:.0f} ms step")


if __name__ == "__main__":
    main()
