"""Shared fixtures: a small real plankton subset (read in place from ../shared), a synthetic set, a trained run."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

PLANKTON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "plankton"
# Six classes from three groups; two hang directly under their group (null subgroup), as in the real tree.
SUBSET_CLASSES = ["acantharia_protist", "protist_noctiluca", "copepod_cyclopoid_oithona", "amphipods",
                  "chaetognath_sagitta", "diatom_chain_string"]
FAST = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=32", "data.num_workers=0",
        "trainer.log_every_n_steps=5", "logging.mlflow=false", "logging.tensorboard=false"]


def need_plankton() -> Path:
    """The shared plankton folder, or skip the test with the reason."""
    if not (PLANKTON / "images").is_dir() or not (PLANKTON / "taxonomy.csv").is_file():
        pytest.skip(f"real plankton data not found at {PLANKTON} (the ../shared folder beside the repo)")
    return PLANKTON


def taxonomy_rows() -> dict[str, dict[str, str]]:
    """The plankton taxonomy table keyed by class."""
    with (need_plankton() / "taxonomy.csv").open(newline="") as fh:
        return {r["class"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def plankton_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of up to 60 real images per subset class, with absolute paths into ../shared (no copies)."""
    root = need_plankton()
    rows = taxonomy_rows()
    path = tmp_path_factory.mktemp("plankton") / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "group", "subgroup", "class"])
        for cls in SUBSET_CLASSES:
            for img in sorted((root / "images" / cls).glob("*.jpg"))[:60]:
                r = rows[cls]
                writer.writerow([str(img), r["group"], r["subgroup"], cls])
    return path


@pytest.fixture(scope="session")
def plankton_store(plankton_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset prepared into a store."""
    from taxotrain.data.prepare import prepare_images

    out = tmp_path_factory.mktemp("store") / "subset.h5"
    prepare_images(None, out, ["group", "subgroup", "class"], manifest=plankton_manifest, workers=1)
    return out


@pytest.fixture(scope="session")
def trained_run(plankton_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch run of a tiny timm model on the plankton subset, through the real CLI."""
    from taxotrain.cli import main

    run = tmp_path_factory.mktemp("runs") / "subset"
    code = main(["fit", f"data.store={plankton_store}", f"run.dir={run}", "trainer.max_epochs=2",
                 "logging.mlflow=true", "logging.tensorboard=true", *[f for f in FAST if "logging" not in f]])
    assert code == 0
    return run


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo's synthetic 3-rank image set (images folder, taxonomy.csv), 8 images per species."""
    from taxotrain.demo import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic"), per_species=8)


SIGNAL_FAST = ["model.kwargs={width: 8}", "data.batch_size=16", "trainer.log_every_n_steps=5",
               "trainer.cpu_threads=1", "logging.mlflow=false", "logging.tensorboard=false"]


@pytest.fixture(scope="session")
def gunpoint_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GunPoint (a real UCR set shipped in the aeon wheel) prepared through the CLI, z-normalised."""
    from taxotrain.cli import main
    from taxotrain.data.signals import ucr_folder

    out = tmp_path_factory.mktemp("signals") / "gunpoint.h5"
    assert main(["prepare", str(ucr_folder("GunPoint")), "--znorm", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def signal_run(gunpoint_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-epoch resnet1d run on GunPoint through the real CLI, with configs/ucr.yaml."""
    from taxotrain.cli import main

    run = tmp_path_factory.mktemp("runs") / "gunpoint"
    recipe = Path(__file__).resolve().parents[1] / "configs" / "ucr.yaml"
    assert main(["fit", "--config", str(recipe), f"data.store={gunpoint_store}", f"run.dir={run}",
                 "trainer.max_epochs=4", *SIGNAL_FAST]) == 0
    return run


TINY = ["model.backbone=test_resnet", "data.image_size=32", "data.batch_size=16", "data.num_workers=0",
        "logging.mlflow=false", "logging.tensorboard=false", "trainer.cpu_threads=1"]


@pytest.fixture(scope="session")
def synthetic_store(synthetic_set: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set prepared through the CLI (family, genus, species)."""
    from taxotrain.cli import main

    images, taxonomy = synthetic_set
    out = tmp_path_factory.mktemp("synthetic_store") / "s.h5"
    assert main(["prepare", str(images), "--taxonomy", str(taxonomy), "--ranks", "family,genus,species",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def synthetic_run(synthetic_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch tiny image run on the synthetic store (never evaluated), through the CLI."""
    from taxotrain.cli import main

    run = tmp_path_factory.mktemp("runs") / "synthetic"
    assert main(["fit", f"data.store={synthetic_store}", f"run.dir={run}", "trainer.max_epochs=2", *TINY]) == 0
    return run


# ---------------------------------------------------------------------------------------------------- embeddings
# Two subset classes play the new species of each: HELDOUT_CLASSES go to the 'heldout' split that evaluate scores
# (few-shot, open set); NEW_CLASSES are left out of a store and enrolled into its run's gallery afterwards. Both of
# NEW_CLASSES hang straight under a group of their own, so enrolling them adds new groups too. (The subgroup rank
# needs acantharia and oithona in training, and amphipods has too few images to enrol beyond the manifest's.)
HELDOUT_CLASSES = ["protist_noctiluca", "chaetognath_sagitta"]
NEW_CLASSES = ["chaetognath_sagitta", "diatom_chain_string"]
EMBEDDING = ["task=embedding", "trainer.max_epochs=8", "trainer.cpu_threads=1", "trainer.progress=none", *FAST]


@pytest.fixture(scope="session")
def heldout_store(plankton_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset prepared with HELDOUT_CLASSES in a 'heldout' split (prepare --holdout-classes FILE)."""
    from taxotrain.cli import main

    folder = tmp_path_factory.mktemp("heldout")
    (folder / "new.txt").write_text("\n".join(HELDOUT_CLASSES) + "\n")
    out = folder / "heldout.h5"
    assert main(["prepare", "--manifest", str(plankton_manifest), "--ranks", "group,subgroup,class", "--out", str(out),
                 "--workers", "1", "--no-leak-check", "--holdout-classes", str(folder / "new.txt")]) == 0
    return out


@pytest.fixture(scope="session")
def embedding_run(heldout_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-epoch ArcFace embedding run (tiny timm model, 32 px) on the held-out store, through the real CLI."""
    return _embedding_fit(heldout_store, tmp_path_factory.mktemp("runs") / "embedding")


def _embedding_fit(store: Path, run: Path) -> Path:
    from taxotrain.cli import main

    assert main(["fit", f"data.store={store}", f"run.dir={run}", *EMBEDDING]) == 0
    return run


@pytest.fixture(scope="session")
def without_new_store(plankton_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset without NEW_CLASSES at all (their taxa are not in the store's taxonomy)."""
    from taxotrain.cli import main

    folder = tmp_path_factory.mktemp("without_new")
    with plankton_manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["class"] not in NEW_CLASSES]
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = folder / "without_new.h5"
    assert main(["prepare", "--manifest", str(folder / "manifest.csv"), "--ranks", "group,subgroup,class", "--out",
                 str(out), "--workers", "1", "--no-leak-check"]) == 0
    return out


@pytest.fixture(scope="session")
def gallery_run(without_new_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-epoch ArcFace embedding run on the subset without NEW_CLASSES, through the real CLI."""
    return _embedding_fit(without_new_store, tmp_path_factory.mktemp("runs") / "gallery")
