"""``taxotrain demo``: the whole path (prepare -> fit -> evaluate -> predict) on a generated image set.

No image dataset of organisms ships in any installable package, so the demo draws a small, clearly synthetic one
with a 3-rank taxonomy: family = shape, genus = shape + colour, species = shape + colour + texture. One truncated
file and one non-image are planted so the verification report has something to say.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from taxotrain.config import load_config, save_config
from taxotrain.data.prepare import prepare_images
from taxotrain.evaluation.report import evaluate_run, summary_line
from taxotrain.inference.predict import write_predictions
from taxotrain.run import RunError
from taxotrain.training.engine import fit

MARKER = ".taxotrain-demo"
SHAPES = ("circles", "squares", "triangles")
COLOURS = {"red": (200, 40, 40), "blue": (40, 70, 200)}
TEXTURES = ("plain", "striped")
RANKS = ["family", "genus", "species"]


def species_table() -> list[tuple[str, str, str]]:
    """(family, genus, species) of every synthetic species."""
    return [(s, f"{s}_{c}", f"{s}_{c}_{t}") for s in SHAPES for c in COLOURS for t in TEXTURES]


def draw_specimen(family: str, colour: str, texture: str, rng: np.random.Generator) -> Image.Image:
    """One synthetic 'organism': a jittered shape on a noisy background, in a non-square frame."""
    w, h = int(rng.integers(36, 56)), int(rng.integers(36, 56))
    bg = rng.normal(225, 12, (h, w, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.uniform(-4, 4), h / 2 + rng.uniform(-4, 4)
    rx, ry = rng.uniform(9, 15), rng.uniform(9, 15)
    fill = tuple(int(np.clip(v + rng.normal(0, 20), 0, 255)) for v in COLOURS[colour])
    box = [cx - rx, cy - ry, cx + rx, cy + ry]
    if family == "circles":
        d.ellipse(box, fill=fill)
    elif family == "squares":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - ry), (cx - rx, cy + ry), (cx + rx, cy + ry)], fill=fill)
    if texture == "striped":
        for x in np.arange(cx - rx, cx + rx, 4.0):
            d.line([(x, cy - ry), (x, cy + ry)], fill=(240, 240, 240), width=1)
        img = Image.composite(img, Image.fromarray(bg), _shape_mask(family, box, (w, h)))
    return img


def _shape_mask(family: str, box: list[float], size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    d = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    if family == "circles":
        d.ellipse(box, fill=255)
    elif family == "squares":
        d.rectangle(box, fill=255)
    else:
        d.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=255)
    return mask


def make_dataset(root: Path, per_species: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/images/<species>/*.jpg`` and ``root/taxonomy.csv``; returns both paths."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    for family, _genus, species in species_table():
        folder = images / species
        folder.mkdir(parents=True, exist_ok=True)
        colour, texture = species.split("_")[1:]
        for i in range(per_species):
            draw_specimen(family, colour, texture, rng).save(folder / f"{species}_{i:03d}.jpg", quality=92)
    first = images / species_table()[0][2]
    good = (first / f"{species_table()[0][2]}_000.jpg").read_bytes()
    (first / "broken_truncated.jpg").write_bytes(good[: len(good) // 3])
    (first / "notes.txt").write_text("field notes, not an image\n")
    taxonomy = root / "taxonomy.csv"
    with taxonomy.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(RANKS)
        writer.writerows(species_table())
    return images, taxonomy


def _claim(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise RunError(f"{out} exists and is not a demo folder; pass --out to another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `taxotrain demo`; deleted and rewritten by the next demo run\n")


def run_demo(out: str | Path = "taxotrain-demo", epochs: int = 6, per_species: int = 40) -> Path:
    """Generate the synthetic set, then prepare, fit, evaluate and predict; returns the report path."""
    out = Path(out)
    _claim(out)
    t0 = time.time()
    print(f"[demo] drawing a synthetic 3-rank image set ({len(species_table())} species) in {out}/data", flush=True)
    images, taxonomy = make_dataset(out / "data", per_species)
    result = prepare_images(images, out / "demo.h5", RANKS, taxonomy=taxonomy)
    print(f"[demo] {result.summary()}", flush=True)

    cfg = load_config(None, [f"data.store={out / 'demo.h5'}", f"run.dir={out / 'run'}", "model.backbone=resnet18",
                             "data.image_size=32", "data.batch_size=32", f"trainer.max_epochs={epochs}",
                             "trainer.log_every_n_steps=5", "data.num_workers=0"])
    save_config(cfg, out / "demo.yaml")
    fitted = fit(cfg)
    print(f"[demo] fit done in {fitted.seconds:.0f}s: best {fitted.monitor} {fitted.best_score:.3f}", flush=True)
    evaluated = evaluate_run(fitted.run_dir)
    print(f"[demo] {summary_line(evaluated)}", flush=True)

    new = out / "new_images"
    rng = np.random.default_rng(1)
    for family, _, species in species_table()[::3]:
        colour, texture = species.split("_")[1:]
        new.mkdir(exist_ok=True)
        draw_specimen(family, colour, texture, rng).save(new / f"unknown_{species}.png")
    (new / "unreadable.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    csv_path, n, errors = write_predictions(fitted.run_dir, [new], out / "predictions.csv", topk=3, workers=0)
    print(f"[demo] predicted {n - errors} new image(s), {errors} unreadable -> {csv_path}", flush=True)
    print(f"[demo] finished in {time.time() - t0:.0f}s", flush=True)
    return evaluated.report
