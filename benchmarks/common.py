"""Shared by the benchmark scripts: the plankton store they run on, the machine's name, and results.csv."""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PLANKTON = HERE.parent.parent / "shared" / "data" / "plankton"
CACHE = HERE / ".cache"
RESULTS = HERE / "results.csv"
COLUMNS = ["date", "benchmark", "machine", "figure", "ratio", "notes"]


def plankton_store() -> Path:
    """The full plankton store, prepared once into ``benchmarks/.cache/`` (about 20 s on 2 cores)."""
    from taxotrain.data.prepare import prepare_images

    out = CACHE / "plankton.h5"
    if not out.is_file():
        if not (PLANKTON / "images").is_dir():
            raise SystemExit(f"the plankton data is not at {PLANKTON} (../shared beside the repo); the benchmarks "
                             "need it")
        CACHE.mkdir(exist_ok=True)
        print(f"preparing {out} from {PLANKTON} (once)", flush=True)
        prepare_images(PLANKTON / "images", out, ["group", "subgroup", "class"], taxonomy=PLANKTON / "taxonomy.csv",
                       workers=os.cpu_count() or 1, progress=False)
    return out


def machine() -> str:
    """A short description of where the figures were measured, e.g. ``2 CPU cores (AMD EPYC ...)``."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} + {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu})"


def record(benchmark: str, figure: str, ratio: float, notes: str = "") -> None:
    """Append one row to ``benchmarks/results.csv`` and print the closing ``RATIO`` line."""
    new = not RESULTS.is_file()
    with RESULTS.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({"date": dt.date.today().isoformat(), "benchmark": benchmark, "machine": machine(),
                         "figure": figure, "ratio": f"{ratio:.3f}", "notes": notes})
    print(f"RATIO {ratio:.3f}", flush=True)
