"""``taxotrain-runtime predict BUNDLE/ IMAGES_OR_FOLDERS... --out predictions.csv``: predict with an exported bundle
on a machine without torch, timm or Lightning. Writes the same CSV as ``taxotrain predict``."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from taxotrain_runtime import __version__
from taxotrain_runtime.bundle import Bundle, BundleError
from taxotrain_runtime.records import record_row
from taxotrain_runtime.views import TTA_VIEWS


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="taxotrain-runtime", description="Run an exported taxotrain bundle.")
    p.add_argument("--version", action="version", version=f"taxotrain-runtime {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("predict", help="classify image files and folders with a bundle into a CSV")
    s.add_argument("bundle", type=Path, help="folder written by `taxotrain export`")
    s.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    s.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default predictions.csv)")
    s.add_argument("--topk", type=int, default=5, help="labels with scores at the finest rank (default 5)")
    s.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    s.add_argument("--tta", default="auto", choices=["auto", *TTA_VIEWS],
                   help="test-time views: auto (default) = those the run trained for")
    return p


def write_csv(bundle: Bundle, inputs: Sequence[str | Path], out: Path, topk: int = 5, batch_size: int = 64,
              tta: str = "auto") -> tuple[int, int]:
    """Predict every image under ``inputs`` into ``out``, flushing batch by batch; returns (rows, errors)."""
    batches = bundle.predict_images(inputs, batch_size, tta, topk)
    first = next(batches, [])
    rows = errors = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=bundle.columns(topk))
        writer.writeheader()
        for records in [first, *batches]:
            for record in records:
                writer.writerow(record_row(record, bundle.tree))
                rows += 1
                errors += bool(record.error)
            fh.flush()
    return rows, errors


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taxotrain-runtime``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.topk < 1:
        parser.error("--batch-size and --topk take 1 or more")
    try:
        bundle = Bundle.open(args.bundle)
        rows, errors = write_csv(bundle, args.inputs, args.out, args.topk, args.batch_size, args.tta)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"taxotrain-runtime {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"predicted {rows - errors} record(s), {errors} unreadable (see the error column) -> {args.out}; roll-up "
          f"thresholds: {bundle.thresholds_source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
