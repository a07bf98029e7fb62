"""``taxotrain demo``: the whole path (prepare -> fit -> evaluate -> predict) on a generated image set, then on a
real signal set.

No image dataset of organisms ships in any installable package, so the demo draws a small, clearly synthetic one
with a 3-rank taxonomy: family = shape, genus = shape + colour, species = shape + colour + texture. One truncated
file and one non-image are planted so the verification report has something to say. The signal part trains on
OSULeaf (six leaf species from their outlines, a UCR set that ships inside the aeon wheel) and writes a page that
links both reports.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from taxotrain.config import PrepareConfig, load_config, save_config
from taxotrain.data.prepare import prepare_images
from taxotrain.data.prepare_signals import prepare_signals
from taxotrain.data.signals import ucr_folder
from taxotrain.evaluation.report import evaluate_run, summary_line
from taxotrain.files import write_text_atomic
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


# The signal half of the demo: configs/ucr.yaml's model and optimiser, with fewer epochs.
SIGNAL_OVERRIDES = ["task=signal", "model.backbone=resnet1d", "model.kwargs={width: 32, kernels: [7, 5, 3]}",
                    "data.batch_size=16", "data.signal_augment.time_warp=0", "optim.lr=0.003",
                    "optim.weight_decay=0.01", "optim.warmup_epochs=1", "optim.min_lr_ratio=0.01",
                    "loss.label_smoothing=0.1", "trainer.monitor=val/loss", "trainer.monitor_mode=min",
                    "trainer.early_stopping_patience=null", "trainer.channels_last=false",
                    "trainer.cpu_threads=1", "trainer.log_every_n_steps=10", "data.num_workers=0"]


def run_signal_demo(out: Path, epochs: int) -> Path:
    """Prepare OSULeaf from the aeon wheel, fit a small resnet1d, evaluate it beside the ROCKET family and predict the
    official TEST file; returns the report path."""
    folder = ucr_folder("OSULeaf")
    result = prepare_signals(folder, out / "osuleaf.h5", PrepareConfig(znorm=True))
    print(f"[demo] {result.summary()}", flush=True)
    cfg = load_config(None, [f"data.store={out / 'osuleaf.h5'}", f"run.dir={out / 'signal_run'}",
                             f"trainer.max_epochs={epochs}", *SIGNAL_OVERRIDES])
    save_config(cfg, out / "signal_demo.yaml")
    fitted = fit(cfg)
    print(f"[demo] signal fit done in {fitted.seconds:.0f}s", flush=True)
    evaluated = evaluate_run(fitted.run_dir)
    print(f"[demo] {summary_line(evaluated)}", flush=True)
    written = write_predictions(fitted.run_dir, [folder / "OSULeaf_TEST.ts"], out / "signal_predictions.csv", topk=3)
    print(f"[demo] predicted {written.rows - written.errors} series of OSULeaf_TEST.ts -> {written.path}", flush=True)
    return evaluated.report


def _index(out: Path, reports: dict[str, Path]) -> Path:
    """``out/index.html``: per report, a link and its headline figures, read from the run's ``metrics.json``."""
    from taxotrain.evaluation.page import CSS, headline_table

    parts = []
    for name, report in reports.items():
        href = html.escape(report.relative_to(out).as_posix())
        parts.append(f"<h2><a href=\"{href}\">{html.escape(name)}</a></h2>")
        try:
            metrics = json.loads((report.parent / "metrics.json").read_text())
        except (OSError, ValueError):
            parts.append("<p class=\"meta\">no metrics.json beside this report</p>")
            continue
        ev = metrics.get("evaluation", {})
        h = metrics.get("hierarchy") or {}
        notes = [f"{html.escape(str(ev.get('split', '?')))} split, {ev.get('records', '?')} records"]
        if h.get("chain_accuracy") is not None and len(h.get("decoded_top1", {})) > 1:
            notes.append(f"chain accuracy {h['chain_accuracy']:.3f}, mistake severity {h['mistake_severity']:.2f}")
        notes += [f"{html.escape(b.get('method', k))} baseline top-1 {b['top1']:.3f}"
                  for k, b in (metrics.get("baseline") or {}).items() if b.get("top1") is not None]
        parts.append(f"{headline_table(metrics)}<p class=\"meta\">{'; '.join(notes)}; "
                     f"<a href=\"{href}\">full report</a> (mistakes, confused pairs, per-class tables, "
                     "figures)</p>")
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>taxotrain demo</title>"
            f"<style>{CSS}</style></head><body><h1>taxotrain demo</h1>{''.join(parts)}</body></html>\n")
    return write_text_atomic(out / "index.html", page)


def run_demo(out: str | Path = "taxotrain-demo", epochs: int = 6, per_species: int = 40,
             signal_epochs: int = 25) -> Path:
    """Generate the synthetic set, then prepare, fit, evaluate and predict; then the same on OSULeaf signals
    (``signal_epochs=0`` skips them). Returns the image report path; ``index.html`` links both reports."""
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
    written = write_predictions(fitted.run_dir, [new], out / "predictions.csv", topk=3, workers=0)
    print(f"[demo] predicted {written.rows - written.errors} new image(s), {written.errors} unreadable -> "
          f"{written.path}", flush=True)
    reports = {"images: synthetic 3-rank set": evaluated.report}
    if signal_epochs > 0:
        reports["signals: OSULeaf (UCR), beside the ROCKET family"] = run_signal_demo(out, signal_epochs)
    index = _index(out, reports)
    print(f"[demo] finished in {time.time() - t0:.0f}s; both reports linked from {index}", flush=True)
    return evaluated.report
