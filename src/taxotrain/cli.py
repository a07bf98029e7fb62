"""The ``taxotrain`` command. It only parses arguments and calls the library; errors become one line and exit 2."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from taxotrain import __version__, list_tasks
from taxotrain.config import DEFAULT_TASK
from taxotrain.data.specs import IMAGE_KIND, SIGNAL_KIND, TTA_MODES
from taxotrain.errors import TaxotrainError

# Darwin Core rank columns in their canonical order, used when a manifest or taxonomy is given without --ranks.
DWC_RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "species", "scientificName"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="taxotrain", description="Train, evaluate and use taxonomy-aware classifiers.")
    p.add_argument("--version", action="version", version=f"taxotrain {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init-config", help="print a complete, commented default config")
    s.add_argument("--task", choices=list_tasks(), default=DEFAULT_TASK,
                   help=f"what the config trains: {', '.join(list_tasks())} (default: %(default)s)")

    s = sub.add_parser("prepare", help="verify a dataset and write one HDF5 store with splits")
    s.add_argument("source", nargs="?", type=Path, help="folder of class folders (or use --manifest); for signals: a "
                   "Capfinder CSV or folder of them, a .ts file or UCR folder (<Name>_TRAIN.ts/_TEST.ts), .npz, X.npy")
    s.add_argument("--manifest", type=Path, help="CSV with a filepath column (relative to it) and rank columns")
    s.add_argument("--ecotaxa", type=Path, metavar="EXPORT.tsv", help="an EcoTaxa export: the finest rank is the "
                   "annotation category, coarser ranks the hierarchy's next levels up; grouped by sample_id; file "
                   "names relative to SOURCE if given, else to the TSV (docs/data.md)")
    s.add_argument("--coco-ct", type=Path, metavar="FILE.json", help="COCO Camera Traps JSON: the category is the "
                   "finest rank (--taxonomy for the others); grouped by location; file names relative to SOURCE if "
                   "given, else to the JSON")
    s.add_argument("--dwca", type=Path, metavar="ARCHIVE.zip", help="a Darwin Core Archive: with a multimedia "
                   "extension, an image store (images relative to SOURCE, or packed in the archive); without, an "
                   "occurrence store of labels with place and date, for a place/date prior; --ranks picks Darwin "
                   "Core columns, e.g. order,family,genus,scientificName (docs/data.md)")
    s.add_argument("--taxonomy", type=Path, help="CSV with one column per rank; the finest matches the folder names")
    s.add_argument("--ranks", help="rank columns coarse to fine, comma-separated, e.g. family,genus,species")
    s.add_argument("--out", type=Path, required=True, help="store to write, e.g. plankton.h5")
    s.add_argument("--val", type=float, help="validation fraction (default 0.1; for signals, prepare.val of --config)")
    s.add_argument("--test", type=float, help="test fraction (default 0.1); ignored with an official test split")
    s.add_argument("--seed", type=int, help="split (and downsampling) seed (default 0)")
    s.add_argument("--group-by", metavar="COLUMN", help="images from a manifest or export: keep the records that "
                   "share this column's value (site, cruise, observation id, date) inside one split, stratified as "
                   "far as the groups allow; 'none' turns off an importer's default group")
    s.add_argument("--dedupe", action="store_true", help="images: keep only the first of each set of exact or "
                   "near-duplicate images (perceptual hash); every prepare lists the pairs that straddle splits in "
                   "<stem>.leaks.csv")
    s.add_argument("--near-distance", type=int, default=24, metavar="BITS", help="images: how many of the 256 bits "
                   "of their perceptual hashes two near-duplicates may differ in (default 24; docs/data.md)")
    s.add_argument("--no-leak-check", action="store_true", help="images: skip the leak check (it compares every "
                   "pair of images: minutes past a few hundred thousand)")
    s.add_argument("--holdout-classes", metavar="F|FILE", help="images: move whole classes out of train/val/test "
                   "into a 'heldout' split (new species for few-shot and open-set evaluation): a fraction of the "
                   "classes, e.g. 0.2, or a file with one class name per line")
    s.add_argument("--holdout-rank", metavar="RANK", help="the rank --holdout-classes picks classes at (default: "
                   "the finest)")
    s.add_argument("--workers", type=int, default=0, help="decoding (images), parsing (Capfinder CSV signals) "
                   "or place/date parsing (manifests, exports, Darwin Core Archives) processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists (runs trained on the old "
                   "store can then no longer be evaluated on it)")
    g = s.add_argument_group("signals (see docs/signals.md); defaults come from the prepare: section of --config")
    g.add_argument("--task", choices=["auto", IMAGE_KIND, SIGNAL_KIND], default="auto",
                   help="the kind of store to write: auto (default) = signal when a signal reader accepts SOURCE, "
                   "else image")
    g.add_argument("--config", type=Path, help="YAML config whose prepare: section gives the signal options")
    g.add_argument("--format", help="signal reader, instead of detecting it: capfinder_csv, ucr_ts, numpy")
    g.add_argument("--target-length", type=int, help="truncate (keep the start) / zero-pad (at the end) every series "
                   "to this length (default: the longest series)")
    g.add_argument("--examples-per-class", help="at most N series per class (seeded); 'null' = the smallest class "
                   "size (balanced); 'all' = keep all (default)")
    g.add_argument("--znorm", action=argparse.BooleanOptionalAction, default=None,
                   help="z-normalise each series (default: no, or prepare.znorm of --config)")
    g.add_argument("--classes", help="comma-separated allowed class names; rows of other classes are reported")

    s = sub.add_parser("fit", help="train a model into a run folder")
    s.add_argument("--config", type=Path, help="YAML config (see init-config)")
    s.add_argument("--params", type=Path, help="YAML of extra values applied over --config (e.g. tuned params)")
    s.add_argument("--resume", help="'auto' continues run.dir from checkpoints/last.ckpt; or a .ckpt path")
    s.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. model.backbone=resnet50")

    s = sub.add_parser("tune", help="search hyperparameters (tune: section) with Optuna; resumable, Ctrl+C keeps the "
                       "best")
    s.add_argument("--config", type=Path, help="YAML config with a tune: section (see docs/tuning.md)")
    s.add_argument("--params", type=Path, help="YAML of extra values applied over --config")
    s.add_argument("--then-fit", action="store_true", help="then train the best params for trainer.max_epochs into "
                   "<run.dir>/final")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. tune.max_trials=20")

    s = sub.add_parser("evaluate", help="score a run's best checkpoint and write its report")
    s.add_argument("run", type=Path, nargs="?", help="run folder written by fit")
    s.add_argument("--compare", nargs="+", metavar="RUN",
                   help="put two or more runs side by side (same test split); NAME=RUN,RUN,... is one setting over "
                   "several seeds: averaged, and its interval resamples the seeds too")
    s.add_argument("--out", type=Path, default=Path("comparison"), help="folder for --compare (default ./comparison)")
    s.add_argument("--unpaired", action="store_true", help="--compare settings scored on different test splits "
                   "(e.g. a random split against one grouped by date): each setting's records are resampled on "
                   "their own")
    s.add_argument("--target-precision", type=float, default=0.9,
                   help="precision the roll-up thresholds aim for on the val split (default 0.9)")
    s.add_argument("--store", type=Path, help="store to evaluate on (default: the one the run was trained on)")
    s.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"], help="checkpoint (default best)")
    s.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")
    s.add_argument("--tta", default="auto", choices=TTA_MODES,
                   help="test-time augmentation: average over flips / all 8 flips+rotations; auto (default) = the "
                   "flips and rotations the run trained with (dihedral for the default augmentation), none for "
                   "signals; none is fastest. Applies to the retrieval embeddings too (gallery and queries)")
    s.add_argument("--no-baseline", action="store_true", help="skip the baselines fitted on the train split: "
                   "the ROCKET family for signal runs (4 closed-form fits), the raw-pixel nearest class mean for "
                   "image runs (one read of the train split), class frequency for priors")
    s.add_argument("--no-retrieval", action="store_true", help="image runs: skip retrieval (the split's embeddings "
                   "searched among the train split's), few-shot and open-set figures")
    s.add_argument("--knn-k", type=int, default=20, metavar="K", help="neighbours that vote in the retrieval k-NN "
                   "top-1 (default 20)")
    s.add_argument("--index", default="exact", choices=("exact", "ivf", "hnsw"), help="retrieval search: exact "
                   "(default), or an approximate faiss index (IVF-flat or HNSW) for train splits of millions")

    s = sub.add_parser("predict", help="classify image files and folders (or signal files) into a CSV")
    s.add_argument("run", type=Path, help="run folder (or .ckpt file), or a bundle folder written by `taxotrain "
                   "export` (runs on ONNX Runtime)")
    s.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively), or manifest CSVs "
                   "(a filepath column, relative to the CSV, and place/date columns: decimalLatitude, "
                   "decimalLongitude, eventDate, ...); for a signal run: Capfinder CSVs, .ts or NumPy files; for a "
                   "prior run: CSVs of place/date rows")
    s.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default predictions.csv)")
    s.add_argument("--topk", type=int, default=5, help="labels with scores at the finest rank (default 5)")
    s.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    s.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")
    s.add_argument("--tta", default="auto", choices=TTA_MODES,
                   help="test-time augmentation: average over flips / all 8 flips+rotations; auto (default) = the "
                   "flips and rotations the run trained with (dihedral for the default augmentation), none for "
                   "signals; none is fastest")
    s.add_argument("--gallery", action="store_true", help="name each rank by the nearest taxon of the run's gallery "
                   "(taxotrain gallery build/add: taxa enrolled after training too), 'unknown' below its threshold")
    s.add_argument("--prior", type=Path, metavar="PRIOR_RUN", help="a task: prior run: multiply its probabilities "
                   "at each record's place and date (from a manifest CSV input) into the model's, before decoding")
    s.add_argument("--prior-weight", type=float, default=1.0, metavar="W", help="exponent of the prior's "
                   "probabilities (default 1: the product rule; 0 ignores the prior)")

    s = sub.add_parser("embed", help="write the embedding of each image file (any image run) to .npz or .parquet")
    s.add_argument("run", type=Path, help="run folder (or .ckpt file) written by fit")
    s.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    s.add_argument("--out", type=Path, required=True, help="embeddings.npz or embeddings.parquet (needs pyarrow): "
                   "one row per file with its path, embedding (L2-normalised) and error")
    s.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    s.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")

    s = sub.add_parser("gallery", help="few-shot enrolment: a gallery of labelled embeddings in the run folder that "
                       "predict --gallery names records from, new taxa included without retraining")
    actions = s.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    g = actions.add_parser("build", help="embed the train split into RUN/gallery/ and choose a similarity threshold "
                           "per rank on val")
    g.add_argument("run", type=Path, help="run folder written by fit")
    g.add_argument("--store", type=Path, help="the run's store, if it moved")
    g.add_argument("--target-precision", type=float, default=0.9, help="precision each rank's threshold aims for on "
                   "the val split (default 0.9); below it predict --gallery writes unknown")
    g.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")
    g = actions.add_parser("add", help="embed a few images per taxon and add them to the gallery with their names")
    g.add_argument("run", type=Path, help="run folder with a gallery")
    g.add_argument("source", type=Path, help="folder of class folders named by the finest rank, or a manifest CSV "
                   "(filepath column, relative to it, and one column per rank)")
    g.add_argument("--taxonomy", type=Path, help="CSV with one column per rank (as prepare's): the coarser ranks of "
                   "the class folders")
    g.add_argument("--ranks", help="the run's ranks the source names, comma-separated coarse to fine (default: all "
                   "the run's ranks it has; a class folder alone names the finest)")
    g.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    g.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers)")

    s = sub.add_parser("export", help="write a run as an inference bundle (ONNX and/or TorchScript) that runs "
                       "without the training stack, checked against PyTorch on real test records")
    s.add_argument("run", type=Path, help="run folder (or .ckpt file)")
    s.add_argument("--out", type=Path, required=True, help="bundle folder to write (new or empty)")
    s.add_argument("--format", default="onnx", choices=["onnx", "torchscript", "all"],
                   help="model format(s) (default onnx; `taxotrain-runtime` and `taxotrain predict BUNDLE` need onnx)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"], help="checkpoint (default best)")
    s.add_argument("--store", type=Path, help="store whose test split checks the export (default: the run's)")
    s.add_argument("--records", type=int, default=1000, help="test records the parity check runs on (default 1000)")

    s = sub.add_parser("calibrate", help="fit one softmax temperature per rank on the val split and write it into the "
                       "run's checkpoints, so that confidences mean what they say (trainer.calibrate does it after "
                       "fit)")
    s.add_argument("run", type=Path, help="run folder written by `taxotrain fit`")
    s.add_argument("--store", type=Path, help="store whose val split to fit on (default: the run's)")
    s.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the run's data.num_workers)")
    s.add_argument("--logit-adjustment", type=float, metavar="TAU", help="first subtract TAU x log(train class "
                   "prior) from each rank's logits (post-hoc logit adjustment for imbalanced classes, Menon et al. "
                   "2021; 1 is the usual value, 0 removes it)")
    s.add_argument("--no-temperature", action="store_true", help="leave the temperatures as they are (with "
                   "--logit-adjustment: adjust only)")

    s = sub.add_parser("ensemble", help="a run that averages the probabilities of trained runs on the same store "
                       "(e.g. 5 seeds, or a network and a ROCKET-family model); evaluate and predict take it as a run")
    s.add_argument("runs", type=Path, nargs="+", help="run folders (or .ckpt files) of the members, at least 2")
    s.add_argument("--out", type=Path, required=True, help="run folder to write for the ensemble (new)")
    s.add_argument("--checkpoint", default="best", choices=["best", "last"], help="members' checkpoint (default best)")

    s = sub.add_parser("demo", help="the whole path on bundled data: prepare, fit, evaluate and predict on a generated "
                       "3-rank image set, then on OSULeaf leaf outlines (a real 1-D signal set in the aeon wheel)",
                       description="Runs prepare -> fit -> evaluate -> predict twice: on a generated synthetic image "
                       "set with a 3-rank taxonomy, then on OSULeaf (6 leaf species from their outlines, a UCR signal "
                       "set that ships in the aeon wheel) beside the ROCKET family. Writes both reports and an "
                       "index page into --out.")
    s.add_argument("--out", type=Path, default=Path("taxotrain-demo"), help="folder for everything (default "
                   "./taxotrain-demo)")
    s.add_argument("--epochs", type=int, default=6, help="training epochs of the image model (default 6)")
    s.add_argument("--signal-epochs", type=int, default=25, help="training epochs of the OSULeaf signal model "
                   "(default 25; 0 skips the signal part)")
    return p


def _resolve_ranks(arg: str | None, table: Path | None) -> list[str]:
    if arg:
        ranks = [r.strip() for r in arg.split(",") if r.strip()]
        if len(set(ranks)) != len(ranks) or not ranks:
            from taxotrain.data.ingest import IngestError

            raise IngestError(f"--ranks {arg!r}: give distinct rank names, coarse to fine, e.g. family,genus,species")
        return ranks
    if table is None:
        return ["class"]
    import csv

    with table.open(newline="", encoding="utf-8-sig") as fh:
        columns = [c.strip() for c in next(csv.reader(fh), [])]
    found = [r for r in DWC_RANKS if r in columns]
    if len(found) >= 2:
        return found
    from taxotrain.data.ingest import IngestError

    raise IngestError(f"{table}: give --ranks, coarse to fine, from its columns: {', '.join(columns)}")


def _cmd_init_config(args: argparse.Namespace) -> None:
    from taxotrain.config import commented_yaml, default_config

    sys.stdout.write(commented_yaml(instance=default_config(args.task)))


def _signal_options(args: argparse.Namespace) -> object:
    from taxotrain.config import ConfigError, load_config

    overrides = [f"prepare.{key}={value}" for key, value in (
        ("val", args.val), ("test", args.test), ("seed", args.seed), ("target_length", args.target_length),
        ("znorm", args.znorm), ("examples_per_class", args.examples_per_class)) if value is not None]
    if args.examples_per_class is not None and args.examples_per_class.lower() in ("null", "none", "min"):
        overrides[-1] = "prepare.examples_per_class=null"
    cfg = load_config(args.config, overrides)
    if cfg.prepare.examples_per_class not in ("all", None) and int(cfg.prepare.examples_per_class) < 1:
        raise ConfigError(f"--examples-per-class {cfg.prepare.examples_per_class}: give a number >= 1, null or all")
    return cfg.prepare


def _prepare_signals(args: argparse.Namespace) -> None:
    from taxotrain.data.ingest import IngestError
    from taxotrain.data.prepare_signals import prepare_signals

    if args.group_by not in (None, "none"):
        raise IngestError("--group-by reads a column of an image manifest; signal sources have no group column")
    if args.source is None:
        raise IngestError("give the signal source: a Capfinder CSV or folder of them, a .ts file or UCR folder, "
                          "or a .npz / X.npy file")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    _report(prepare_signals(args.source, args.out, _signal_options(args), fmt=args.format, classes=classes,
                            overwrite=args.overwrite, workers=args.workers))


def _prepare_occurrences(args: argparse.Namespace) -> None:
    from taxotrain.data.prepare_occurrences import default_dwca_ranks, prepare_occurrences

    source = args.dwca or args.manifest
    ranks = (_resolve_ranks(args.ranks, None) if args.ranks else default_dwca_ranks(source) if args.dwca
             else _resolve_ranks(None, args.manifest))
    _report(prepare_occurrences(source, args.out, ranks, taxonomy=args.taxonomy,
                                val=0.1 if args.val is None else args.val, test=0.1 if args.test is None else args.test,
                                seed=args.seed or 0, group_by=args.group_by, overwrite=args.overwrite,
                                workers=args.workers))


def _prepare_images(args: argparse.Namespace) -> None:
    from taxotrain.data.prepare_images import prepare_images

    if args.dwca is not None and not args.ranks:
        from taxotrain.data.prepare_occurrences import default_dwca_ranks

        args.ranks = ",".join(default_dwca_ranks(args.dwca))
    ranks = _resolve_ranks(args.ranks, args.manifest or args.taxonomy)
    result = prepare_images(args.source, args.out, ranks, taxonomy=args.taxonomy, manifest=args.manifest,
                            val=0.1 if args.val is None else args.val, test=0.1 if args.test is None else args.test,
                            seed=args.seed or 0, workers=args.workers, overwrite=args.overwrite,
                            group_by=args.group_by, dedupe=args.dedupe, ecotaxa=args.ecotaxa, coco_ct=args.coco_ct,
                            near_distance=args.near_distance, leak_check=not args.no_leak_check,
                            holdout_classes=args.holdout_classes, holdout_rank=args.holdout_rank, dwca=args.dwca)
    _report(result)


def _report(result: object) -> None:
    print(result.summary())  # type: ignore[attr-defined]
    for warning in result.warnings:  # type: ignore[attr-defined]
        print(f"taxotrain prepare: warning: {warning}", file=sys.stderr)


def _cmd_prepare(args: argparse.Namespace) -> None:
    from taxotrain.data.prepare_occurrences import dwca_has_images, manifest_has_files
    from taxotrain.data.signals import source_kind

    if args.dwca is not None:
        from taxotrain.data.dwca import read_dwca

        (_prepare_images if dwca_has_images(read_dwca(args.dwca)) else _prepare_occurrences)(args)
        return
    if args.manifest is not None and not manifest_has_files(args.manifest):
        _prepare_occurrences(args)  # occurrence records with no image: a place/date prior's data
        return

    table = args.manifest or args.ecotaxa or args.coco_ct
    kind = source_kind(args.source, table) if args.task == "auto" else args.task
    {IMAGE_KIND: _prepare_images, SIGNAL_KIND: _prepare_signals}[kind](args)


def _cmd_fit(args: argparse.Namespace) -> None:
    from taxotrain.config import dump_yaml, load_config
    from taxotrain.run_folder import RunPaths

    cfg_path = args.config
    if cfg_path is None and args.resume:  # resuming with no config: use the run's own
        run_dir = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("run.dir=")), None)
        if run_dir and RunPaths(Path(run_dir)).config.is_file():
            cfg_path = RunPaths(Path(run_dir)).config
    cfg = load_config(cfg_path, args.overrides, params=args.params)
    if args.print_config:
        sys.stdout.write(dump_yaml(cfg))
        return
    from taxotrain.training.engine import fit

    result = fit(cfg, resume=args.resume)
    if result.process != 0:
        return  # a DDP run's other processes: process 0 reports
    score = f"{result.best_score:.4f}" if result.best_score is not None else "n/a"
    print(f"fit done in {result.seconds / 60:.1f} min ({result.epochs} epochs): best {result.monitor} {score} -> "
          f"{result.best_checkpoint}; next: taxotrain evaluate {shlex.quote(str(result.run_dir))}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from taxotrain.config import load_config

    cfg = load_config(args.config, args.overrides, params=args.params)  # config errors before the heavy imports
    from taxotrain.tuning import tune

    result = tune(cfg, then_fit=args.then_fit)
    best = f"{result.best_value:.4f} (trial {result.best_number})" if result.best_value is not None else "n/a"
    print(f"tune {'interrupted' if result.interrupted else 'done'}: " + ", ".join(
        f"{n} {s}" for s, n in result.states.items()) + f"; best {best}; report {result.study_dir / 'study.html'}")
    if "best_params" in result.files:
        print(f"final training: taxotrain fit --config CONFIG.yaml --params {result.files['best_params']} "
              "run.dir=runs/final" if result.final is None else f"final fit: {result.final.run_dir}")
    return 130 if result.interrupted else 0


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from taxotrain.evaluation.report import evaluate_run, summary_line
    from taxotrain.run import RunError

    if args.compare:
        from taxotrain.evaluation.compare import compare_runs, format_table

        runs = ([args.run] if args.run else []) + args.compare
        comparison = compare_runs(runs, args.out, unpaired=args.unpaired)
        print(format_table(comparison))
        print(f"comparison: {comparison.html}")
        return
    if args.run is None:
        raise RunError("give a run folder, or --compare RUN_A RUN_B")
    if args.knn_k < 1:
        raise RunError(f"--knn-k {args.knn_k}: give at least 1 neighbour")
    result = evaluate_run(args.run, store=args.store, split=args.split, checkpoint=args.checkpoint,
                          workers=args.workers, tta=args.tta, target_precision=args.target_precision,
                          baseline=not args.no_baseline, retrieval=not args.no_retrieval, knn_k=args.knn_k,
                          index=args.index)
    print(summary_line(result))


def _cmd_predict(args: argparse.Namespace) -> None:
    from taxotrain.inference.predict import write_predictions

    written = write_predictions(args.run, args.inputs, args.out, topk=args.topk, batch_size=args.batch_size,
                                workers=args.workers, tta=args.tta, gallery=args.gallery, prior=args.prior,
                                prior_weight=args.prior_weight)
    print(written.summary())


def _cmd_embed(args: argparse.Namespace) -> None:
    from taxotrain.inference.embed import write_embeddings

    print(write_embeddings(args.run, args.inputs, args.out, batch_size=args.batch_size, workers=args.workers)
          .summary())


def _cmd_gallery(args: argparse.Namespace) -> None:
    from taxotrain.inference.gallery import add_to_gallery, build_gallery, gallery_dir

    if args.gallery_command == "build":
        built = build_gallery(args.run, store=args.store, target_precision=args.target_precision,
                              workers=args.workers)
        print(f"gallery of {len(built.embedding)} train record(s) -> {gallery_dir(args.run)}; "
              f"{built.describe_thresholds()}; next: taxotrain gallery add {shlex.quote(str(args.run))} FOLDER")
        return
    ranks = [r.strip() for r in args.ranks.split(",") if r.strip()] if args.ranks else None
    added = add_to_gallery(args.run, args.source, taxonomy=args.taxonomy, ranks=ranks, batch_size=args.batch_size,
                           workers=args.workers)
    print(f"{added.summary()}; next: taxotrain predict {shlex.quote(str(args.run))} IMAGES --gallery")


def _cmd_export(args: argparse.Namespace) -> None:
    from taxotrain.export import export_run

    formats = ["onnx", "torchscript"] if args.format == "all" else [args.format]
    exported = export_run(args.run, args.out, formats, checkpoint=args.checkpoint, store=args.store,
                          records=args.records)
    print(exported.summary())


def _cmd_calibrate(args: argparse.Namespace) -> None:
    from taxotrain.config import ConfigError
    from taxotrain.training.calibration import calibrate_run

    if args.logit_adjustment is not None and not 0 <= args.logit_adjustment < float("inf"):
        raise ConfigError(f"--logit-adjustment {args.logit_adjustment}: give tau >= 0 (1 is the usual value, 0 "
                          "removes the adjustment)")
    if args.no_temperature and args.logit_adjustment is None:
        raise ConfigError("--no-temperature leaves nothing to do; give --logit-adjustment TAU, or drop it")
    result = calibrate_run(args.run, store=args.store, workers=args.workers, logit_adjustment=args.logit_adjustment,
                           temperature=not args.no_temperature)
    print(f"{result.summary()}; next: taxotrain evaluate {shlex.quote(str(result.run_dir))}")


def _cmd_ensemble(args: argparse.Namespace) -> None:
    from taxotrain.training.ensemble import make_ensemble

    out = make_ensemble(args.runs, args.out, which=args.checkpoint)
    print(f"ensemble of {len(args.runs)} runs (mean of their probabilities) -> {out}; next: taxotrain evaluate "
          f"{shlex.quote(str(out))}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from taxotrain.demo import run_demo

    report = run_demo(args.out, epochs=args.epochs, signal_epochs=args.signal_epochs)
    index = Path(args.out) / "index.html"
    print(f"demo report: {report}" + (f"; both reports: {index}" if index.is_file() else ""))


COMMANDS = {"init-config": _cmd_init_config, "prepare": _cmd_prepare, "fit": _cmd_fit, "tune": _cmd_tune,
            "evaluate": _cmd_evaluate, "predict": _cmd_predict, "embed": _cmd_embed, "gallery": _cmd_gallery,
            "export": _cmd_export, "calibrate": _cmd_calibrate,
            "ensemble": _cmd_ensemble, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taxotrain`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse stops collecting KEY=VALUE after a flag (`tune run.dir=x --then-fit a.b=1`); take them too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        code = COMMANDS[args.command](args)  # commands return an exit code or None (= 0)
    except TaxotrainError as exc:
        print(f"taxotrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"taxotrain {args.command}: interrupted; files already written are kept", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
