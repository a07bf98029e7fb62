"""What a prepare run says: the one-line summary and the verification report beside the store."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from taxotrain.files import atomic_path


@dataclass
class PrepareResult:
    """What a prepare run wrote, for the one-line summary."""

    store: Path
    report: Path
    kept: int
    skipped: int
    classes: dict[str, int]
    splits: dict[str, int]
    train_only: int
    what: str = "images"
    unit: str = "file(s)"
    extra: str = ""

    @property
    def warnings(self) -> list[str]:
        """What a user should know before training on the store (e.g. a rank with a single class)."""
        few = [f"{rank} ({n})" for rank, n in self.classes.items() if n < 2]
        if not few:
            return []
        return [f"{self.store}: fewer than 2 classes at rank(s) {', '.join(few)}; fit refuses a rank with nothing "
                "to tell apart: add classes (for images, or leave the rank out of --ranks)"]

    def summary(self) -> str:
        """One line: counts, classes per rank, splits and where the skip report is."""
        ranks = ", ".join(f"{n} {r}" for r, n in self.classes.items())
        splits = "/".join(str(self.splits[s]) for s in ("train", "val", "test"))
        if "heldout" in self.splits:
            splits += f", {self.splits['heldout']} in held-out classes"
        small = f"; {self.train_only} class(es) too small to split kept in train" if self.train_only else ""
        extra = f"; {self.extra}" if self.extra else ""
        return (f"prepared {self.kept} {self.what} ({ranks}; train/val/test {splits}{extra}) -> {self.store}; "
                f"skipped {self.skipped} {self.unit}, listed in {self.report}{small}")


def report_path(store: Path) -> Path:
    """Where the skip report of ``store`` goes: next to it, ``<stem>.report.csv``."""
    return store.with_name(store.stem + ".report.csv")


def write_report(path: Path, skipped: list[tuple[str, str]]) -> None:
    """The verification report: one ``path,reason`` row per skipped file or row."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)


def refuse_existing(out: Path, overwrite: bool) -> None:
    """A prepare never replaces a store unless asked: runs trained on it would be scored on other records."""
    from taxotrain.data.ingest import IngestError

    if Path(out).exists() and not overwrite:
        raise IngestError(f"{out} already exists; runs trained on it would be evaluated on other records if it were "
                          "replaced. Write to another --out, or pass --overwrite to replace it")
