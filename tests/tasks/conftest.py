"""Fixtures of the place/date metadata tests: the real plankton subset with generated places and dates that follow
the class (so metadata helps), an image run and a prior trained on them, and the real cetacean archive."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SUBSET_CLASSES, TINY, need_plankton, taxonomy_rows

CETACEANS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cetacean_dwca" / "dwca-nssd-v1.0.zip"
META_COLUMNS = ["decimalLatitude", "decimalLongitude", "eventDate"]


def class_metadata(k: int, rng: np.random.Generator) -> tuple[str, str, str]:
    """Place and date of a record of subset class ``k``: each class lives in its own region and season (about 4
    degrees and 10 days around its centre); one record in ten lacks its place, one in ten its date."""
    lat = f"{-50 + 20 * k + rng.normal(0, 4):.3f}" if rng.random() > 0.1 else ""
    lon = f"{-150 + 55 * k + rng.normal(0, 4):.3f}" if lat else ""
    day = int(15 + 60 * k + rng.normal(0, 10)) % 365
    date = str(np.datetime64("2019-01-01") + np.timedelta64(day, "D")) if rng.random() > 0.1 else ""
    return lat, lon, date


@pytest.fixture(scope="session")
def metadata_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Up to 60 real images per subset class (paths into ../shared) with a place and a date per record."""
    root, rows = need_plankton(), taxonomy_rows()
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("metadata") / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "group", "subgroup", "class", *META_COLUMNS])
        for k, cls in enumerate(SUBSET_CLASSES):
            for img in sorted((root / "images" / cls).glob("*.jpg"))[:60]:
                r = rows[cls]
                writer.writerow([str(img), r["group"], r["subgroup"], cls, *class_metadata(k, rng)])
    return path


@pytest.fixture(scope="session")
def metadata_store(metadata_manifest: Path) -> Path:
    """The manifest prepared into an image store with place/date metadata."""
    from taxotrain.cli import main

    out = metadata_manifest.with_name("images.h5")
    assert main(["prepare", "--manifest", str(metadata_manifest), "--ranks", "group,subgroup,class", "--out",
                 str(out), "--workers", "1", "--no-leak-check"]) == 0
    return out


@pytest.fixture(scope="session")
def metadata_run(metadata_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch tiny image model with model.metadata: [place, date] (concat fusion, default masking), by the CLI."""
    from taxotrain.cli import main

    run = tmp_path_factory.mktemp("runs") / "metadata"
    assert main(["fit", f"data.store={metadata_store}", f"run.dir={run}", "trainer.max_epochs=3",
                 "model.metadata=[place, date]", "data.batch_size=32", "trainer.progress=none",
                 *[t for t in TINY if not t.startswith("data.batch_size")]]) == 0
    return run


@pytest.fixture(scope="session")
def occurrence_store(metadata_manifest: Path) -> Path:
    """The same records without their images (no filepath column): an occurrence store of the same taxa."""
    from taxotrain.cli import main

    with metadata_manifest.open(newline="") as fh:
        rows = [{k: v for k, v in r.items() if k != "filepath"} for r in csv.DictReader(fh)]
    table = metadata_manifest.with_name("occurrences.csv")
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = table.with_suffix(".h5")
    assert main(["prepare", "--manifest", str(table), "--ranks", "group,subgroup,class", "--out", str(out)]) == 0
    return out


PRIOR_FAST = ["task=prior", "logging.mlflow=false", "logging.tensorboard=false", "trainer.cpu_threads=1",
              "trainer.progress=none", "data.num_workers=0"]


@pytest.fixture(scope="session")
def prior_run(occurrence_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-epoch place/date prior on the occurrence store of the plankton subset, by the CLI."""
    from taxotrain.cli import main

    run = tmp_path_factory.mktemp("runs") / "prior"
    assert main(["fit", f"data.store={occurrence_store}", f"run.dir={run}", "trainer.max_epochs=10",
                 "model.metadata_hidden=64", *PRIOR_FAST]) == 0
    return run


@pytest.fixture(scope="session")
def cetacean_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real cetacean Darwin Core Archive (2,176 sightings and strandings, no images) as an occurrence store."""
    from taxotrain.cli import main

    if not CETACEANS.is_file():
        pytest.skip(f"real Darwin Core Archive not found at {CETACEANS} (the ../shared folder beside the repo)")
    out = tmp_path_factory.mktemp("cetaceans") / "cet.h5"
    assert main(["prepare", "--dwca", str(CETACEANS), "--ranks", "family,genus,scientificName", "--out",
                 str(out)]) == 0
    return out
