"""prepare at scale: images/s with 1 and with 2 worker processes on the plankton folder, and the peak memory of a
prepare over generated corpora of two sizes (small images in class folders), which must not grow with the corpus.

    python benchmarks/prepare_scale.py                      # both parts: plankton throughput, 20,000 vs 200,000
    python benchmarks/prepare_scale.py --sizes 2000 20000   # a quicker memory check
    python benchmarks/prepare_scale.py --skip-throughput --manifest-rows 100000 1000000   # + reading manifests

Each prepare runs in its own process (``taxotrain prepare ... --no-leak-check``: the leak check compares every pair,
so it is the one part that is meant to grow); its peak resident memory is that process's ``ru_maxrss``, the decoding
workers' the largest of theirs. Ends with ``RATIO <2-worker images/s / 1-worker images/s>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE, PLANKTON, record

# runs one prepare through the real CLI and prints its own and its children's peak memory as JSON on the last line
RUN = """
import json, resource, sys, time
from taxotrain.cli import main
t0 = time.time()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.time() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def prepare(args: list[str]) -> dict[str, float]:
    """One prepare in a fresh process; its time and peak memory."""
    done = subprocess.run([sys.executable, "-c", RUN, "prepare", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def corpus(n: int, classes: int = 20, size: int = 24) -> Path:
    """``n`` small PNG images in ``classes`` class folders under benchmarks/.cache (written once, then reused)."""
    import numpy as np
    from PIL import Image

    root = CACHE / f"corpus_{n}"
    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(classes, size, size, 3), dtype=np.uint8)
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i in range(n):
        c = i % classes
        noise = rng.integers(-40, 40, size=(size, size, 3))
        img = np.clip(base[c].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"class_{c:02d}" / f"{i:07d}.png", compress_level=1)
    done.write_text(str(n))
    print(f"wrote {n} images to {root} in {time.time() - t0:.0f} s", flush=True)
    return root


def throughput() -> float:
    """images/s of a plankton prepare with 2 workers over 1 worker (leak check off)."""
    if not (PLANKTON / "images").is_dir():
        raise SystemExit(f"the plankton data is not at {PLANKTON}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2, 1, 2):  # alternating rounds: the page cache is warm for every round but the first
            out = Path(tmp) / f"p{workers}.h5"
            res = prepare([str(PLANKTON / "images"), "--taxonomy", str(PLANKTON / "taxonomy.csv"), "--ranks",
                           "group,subgroup,class", "--out", str(out), "--workers", str(workers), "--no-leak-check",
                           "--overwrite"])
            rates.setdefault(workers, []).append(24_352 / res["seconds"])
            print(f"plankton prepare, {workers} worker(s): {res['seconds']:.1f} s, "
                  f"{24_352 / res['seconds']:.0f} images/s, peak {res['peak_mb']:.0f} MB", flush=True)
    best = {w: max(r) for w, r in rates.items()}
    return best[2] / best[1]


def memory(sizes: list[int]) -> list[dict[str, float]]:
    """Peak memory of a prepare (2 workers, leak check off) over each generated corpus."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = corpus(n)
            res = prepare([str(root), "--out", str(Path(tmp) / f"c{n}.h5"), "--workers", "2", "--no-leak-check"])
            res["images"] = n
            print(f"{n} images: {res['seconds']:.0f} s ({n / res['seconds']:.0f} images/s), peak "
                  f"{res['peak_mb']:.0f} MB (main process), {res['worker_peak_mb']:.0f} MB (largest worker)",
                  flush=True)
            out.append(res)
    return out


# reads one manifest as prepare does (records, taxonomy, place/date), no image opened; prints time and peak memory
INGEST = """
import json, resource, sys, time
from pathlib import Path
from taxotrain.data.ingest import from_manifest
t0 = time.time()
ingested = from_manifest(Path(sys.argv[1]), ["family", "genus", "species"], None, workers=int(sys.argv[2]))
print(json.dumps({"rows": len(ingested.records), "seconds": time.time() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def manifest_ingest(sizes: list[int]) -> list[dict[str, float]]:
    """Rows/s and peak memory of reading generated manifests (3 ranks and Darwin Core place/date columns for 500
    species; the files they name need not exist, as reading a manifest opens none), with 1 and 2 processes parsing
    the place/date text; returns the 2-process figures of each size."""
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"m{n}.csv"
            rng = np.random.default_rng(0)
            species = rng.integers(0, 500, n)
            with path.open("w") as fh:
                fh.write("filepath,family,genus,species,decimalLatitude,decimalLongitude,eventDate\n")
                for i in range(n):
                    s = int(species[i])
                    fh.write(f"images/{s // 50}/{s}/{i:08d}.jpg,family {s // 50},genus {s // 5},species {s},"
                             f"{rng.uniform(-80, 80):.5f},{rng.uniform(-180, 180):.5f},2019-{1 + i % 12:02d}-"
                             f"{1 + i % 28:02d}\n")
            for workers in (1, 2):  # place/date text parsed in this process, or by 2 workers while it reads
                done = subprocess.run([sys.executable, "-c", INGEST, str(path), str(workers)], capture_output=True,
                                      text=True, check=True)
                res = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"manifest of {n} rows, {workers} worker(s): read in {res['seconds']:.1f} s "
                      f"({n / res['seconds']:.0f} rows/s), peak {res['peak_mb']:.0f} MB", flush=True)
            out.append(res)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--manifest-rows", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="also read generated manifests of these many rows (no image is opened)")
    parser.add_argument("--skip-images", action="store_true", help="skip the generated image corpora")
    args = parser.parse_args()
    if args.manifest_rows:
        small, large = manifest_ingest(args.manifest_rows)
        print(f"manifest peak memory {large['rows']} vs {small['rows']} rows: {large['peak_mb']:.0f} / "
              f"{small['peak_mb']:.0f} MB = x{large['peak_mb'] / small['peak_mb']:.2f}")
    if args.skip_images:
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    ratio = float("nan")
    if not args.skip_throughput:
        ratio = throughput()
    small, large = memory(args.sizes)
    growth = large["peak_mb"] / small["peak_mb"]
    print(f"peak memory {large['images']} vs {small['images']} images: {large['peak_mb']:.0f} / "
          f"{small['peak_mb']:.0f} MB = x{growth:.2f}")
    record("prepare_scale", f"plankton 2 vs 1 workers; peak MB {small['peak_mb']:.0f} at {small['images']} vs "
           f"{large['peak_mb']:.0f} at {large['images']}", ratio,
           f"memory growth x{growth:.2f} for x{large['images'] / small['images']:.0f} images")


if __name__ == "__main__":
    main()
