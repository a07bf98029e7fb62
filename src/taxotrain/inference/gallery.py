"""Few-shot enrolment: a gallery of labelled embeddings in the run folder that names new records by the nearest
taxon prototype, so a taxon added with a few images is predicted without retraining.

::

    RUN/gallery/gallery.npz   embedding float32 [N, D] (L2-normalised), labels int64 [N, R] (-1 = unknown),
                              path str [N], source int8 [N] (0 = the train split, 1 = added); plain arrays, no pickle
    RUN/gallery/gallery.json  the taxa per rank (the run's, then the added ones: new ids follow the trained classes)
                              with their ancestors, the thresholds per rank and how they were chosen, what was added

``taxotrain gallery build RUN`` embeds the train split and chooses a similarity threshold per rank on the val split:
the smallest at which the nearest-prototype names of the val records reach ``target_precision``.
``taxotrain gallery add RUN FOLDER_OR_MANIFEST`` embeds a few images per taxon and appends them with their names.
``taxotrain predict RUN ... --gallery`` names each rank by the nearest prototype (the L2-normalised mean of a taxon's
gallery embeddings); below the rank's threshold it writes ``unknown``, and ``deepest_rank``/``deepest_label`` give
the deepest rank that, with every coarser rank, clears its threshold (``inference/openset.py``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from taxotrain.data.store import Store
from taxotrain.files import atomic_path, write_text_atomic
from taxotrain.inference.embed import embed_inputs, embed_split
from taxotrain.inference.openset import apply_thresholds, choose_threshold
from taxotrain.inference.search import class_prototypes, l2_normalize
from taxotrain.run import LoadedRun, RunError, load_run, torch_threads
from taxotrain.run_folder import RunPaths
from taxotrain.tasks import InputBatch, Task
from taxotrain.taxonomy import NULL, Tree
from taxotrain_runtime.records import PredictionRecord, rank_columns, record_row

FORMAT = "taxotrain-gallery"
UNKNOWN = "unknown"  # the label of a rank whose nearest prototype is below the rank's threshold
TRAIN, ADDED = 0, 1


class GalleryError(RunError):
    """A gallery that is missing, does not fit the run, or an enrolment source that cannot be read."""


def gallery_dir(run_root: str | Path) -> Path:
    """Where a run keeps its gallery."""
    return RunPaths(Path(run_root)).gallery


@dataclass
class Gallery:
    """Labelled embeddings with the taxa they name and the threshold of each rank (module docstring)."""

    tree: Tree
    embedding: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    source: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ storage

    @classmethod
    def load(cls, run_root: str | Path) -> Gallery:
        """The gallery of a run folder; a one-line error naming the command that builds it when there is none."""
        folder = gallery_dir(run_root)
        if not (folder / "gallery.json").is_file() or not (folder / "gallery.npz").is_file():
            raise GalleryError(f"{run_root} has no gallery; build one with `taxotrain gallery build {run_root}`")
        meta = json.loads((folder / "gallery.json").read_text())
        if meta.get("format") != FORMAT:
            raise GalleryError(f"{folder / 'gallery.json'} is not a taxotrain gallery; build it again")
        with np.load(folder / "gallery.npz", allow_pickle=False) as arrays:
            return cls(Tree.from_dict(meta["tree"]), arrays["embedding"], arrays["labels"], arrays["path"],
                       arrays["source"], meta)

    def save(self, run_root: str | Path) -> Path:
        """Write the arrays and the JSON (each atomically, the arrays first); returns the folder."""
        folder = gallery_dir(run_root)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "gallery.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, embedding=self.embedding.astype(np.float32), labels=self.labels.astype(np.int64),
                     path=self.paths.astype(str), source=self.source.astype(np.int8))
        self.meta.update(tree=self.tree.to_dict(), records={"train": int((self.source == TRAIN).sum()),
                                                            "added": int((self.source == ADDED).sum())})
        write_text_atomic(folder / "gallery.json", json.dumps(self.meta, indent=2) + "\n")
        return folder

    # ------------------------------------------------------------------ naming records

    @property
    def thresholds(self) -> list[float]:
        """The similarity threshold of each rank (``inf`` where none could be chosen: nothing is accepted)."""
        saved = self.meta.get("thresholds") or {}
        return [float("inf") if saved.get(r) is None else float(saved[r]) for r in self.tree.ranks]

    def prototypes(self) -> list[np.ndarray]:
        """Per rank, each taxon's prototype ``[C_rank, D]``: the normalised mean of its gallery embeddings (NaN rows
        for taxa without one)."""
        return [class_prototypes(self.embedding, self.labels[:, r], n)[0]
                for r, n in enumerate(self.tree.num_classes)]

    def similarities(self, emb: np.ndarray, prototypes: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Per rank, the cosine similarity ``[n, C_rank]`` of each (normalised) embedding to every prototype
        (``-inf`` for taxa without one)."""
        out = []
        for protos in prototypes if prototypes is not None else self.prototypes():
            sims = l2_normalize(emb) @ np.nan_to_num(protos, nan=0.0).T
            sims[:, np.isnan(protos).any(1)] = -np.inf
            out.append(sims)
        return out

    def classify(self, emb: np.ndarray, prototypes: list[np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The nearest prototype at each rank: ``(labels [n, R], similarities [n, R], all similarities per rank)``;
        a rank without any prototype gives ``NULL`` and ``-inf``."""
        sims = self.similarities(emb, prototypes)
        labels = np.stack([s.argmax(1) if s.shape[1] else np.full(len(s), NULL) for s in sims], 1)
        best = np.stack([s.max(1) if s.shape[1] else np.full(len(s), -np.inf) for s in sims], 1)
        return np.where(np.isfinite(best), labels, NULL), best.astype(np.float64), sims

    def roll_up(self, labels: np.ndarray, similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(accepted [n, R], deepest [n])``: each rank on its own (similarity at or above its threshold), and the
        deepest accepted rank whose taxon's lineage holds at every coarser rank: that rank is accepted and names the
        taxon's ancestor, or the taxon has no ancestor there (a class hanging straight under its group skips the
        subgroup). ``-1``: no rank (unknown). Without skipped ranks this is ``openset.apply_thresholds``' rule."""
        accepted, _ = apply_thresholds(similarities, self.thresholds)
        deepest = np.full(len(labels), -1, dtype=np.int64)
        for n in range(len(labels)):
            for d in range(len(self.tree.ranks) - 1, -1, -1):
                if not accepted[n, d]:
                    continue
                lineage = self.tree.ancestors[d][labels[n, d]]
                if all(lineage[q] == NULL or (accepted[n, q] and labels[n, q] == lineage[q]) for q in range(d)):
                    deepest[n] = d
                    break
        return accepted, deepest

    def records(self, emb: np.ndarray | None, batch: InputBatch, topk: int,
                prototypes: list[np.ndarray] | None = None) -> list[PredictionRecord]:
        """A prediction record per record of ``batch``: per rank the nearest taxon (``unknown`` below the rank's
        threshold; empty where the named deepest taxon skips the rank) and its similarity, the roll-up
        (:meth:`roll_up`) and the finest rank's top-k taxa."""
        tree, ranks = self.tree, self.tree.ranks
        if emb is not None and len(emb):
            labels, best, sims = self.classify(emb, prototypes)
            accepted, deepest = self.roll_up(labels, best)
        out, row = [], 0
        for b, error in enumerate(batch.errors):
            more = batch.extra[b] if batch.extra else {}
            if error:
                out.append(PredictionRecord(batch.ids[b], extra=more, error=error))
                continue
            d = int(deepest[row])
            skipped = tree.ancestors[d][labels[row, d]][:d] == NULL if d >= 0 else np.zeros(0, dtype=bool)
            named = {}
            for r, rank in enumerate(ranks):
                i = int(labels[row, r])
                skip = r < d and skipped[r]
                name = None if i == NULL or skip else tree.names[r][i] if accepted[row, r] else UNKNOWN
                named[rank] = (name, float(best[row, r]))
            fine = sims[-1][row]
            order = [i for i in np.argsort(-fine, kind="stable")[:topk] if np.isfinite(fine[i])]
            rolled = (ranks[d], tree.names[d][labels[row, d]]) if d >= 0 else None
            out.append(PredictionRecord(batch.ids[b], named, [(tree.names[-1][i], float(fine[i])) for i in order],
                                        rolled, self.thresholds[d] if d >= 0 else None, more))
            row += 1
        return out

    def columns(self, task: Task, topk: int) -> list[str]:
        """The prediction CSV's columns (the top-k over every taxon of the gallery, added ones included)."""
        return [*task.id_columns, *rank_columns(self.tree, topk), *task.extra_columns, "error"]

    def row(self, record: PredictionRecord) -> dict[str, Any]:
        """A record as a CSV row."""
        return record_row(record, self.tree)

    def describe_thresholds(self) -> str:
        """Where the thresholds come from, for the log."""
        shown = ", ".join(f"{r} {t:.3g}" for r, t in zip(self.tree.ranks, self.thresholds, strict=True))
        return (f"gallery similarity thresholds {shown}, chosen on {self.meta.get('chosen_on')} for a precision of "
                f"{self.meta.get('target_precision')}")


# ------------------------------------------------------------------------------------------------ build


def build_gallery(run_dir: str | Path, store: str | Path | None = None, target_precision: float = 0.9,
                  batch_size: int | None = None, workers: int | None = None) -> Gallery:
    """Embed the train split of the run's store into ``RUN/gallery/`` and choose each rank's similarity threshold on
    the val split for ``target_precision`` (replacing any gallery there, and what was added to it)."""
    if not 0 < target_precision <= 1:
        raise GalleryError(f"--target-precision {target_precision}: give a precision in (0, 1]")
    run = load_run(run_dir)
    st = run.open_store(store)
    emb, labels, indices = embed_split(run, st, "train", batch_size, workers)
    tax = run.taxonomy
    tree = Tree(list(tax.ranks), [list(n) for n in tax.names], [a.copy() for a in tax.ancestors])
    paths = np.array([st.paths[i] for i in indices], dtype=str)
    gallery = Gallery(tree, l2_normalize(emb), labels, paths, np.full(len(emb), TRAIN, np.int8))
    gallery.meta = {"format": FORMAT, "version": 1, "run": str(run.root), "checkpoint": str(run.checkpoint),
                    "store": str(st.path), "embedding_dim": int(emb.shape[1]), "ranks": list(tax.ranks),
                    "trained_classes": list(tax.num_classes), "target_precision": target_precision,
                    **_thresholds(run, st, gallery, target_precision, batch_size, workers), "added": []}
    gallery.save(run.root)
    return gallery


def _thresholds(run: LoadedRun, store: Store, gallery: Gallery, target_precision: float, batch_size: int | None,
                workers: int | None) -> dict[str, Any]:
    if len(store.splits["val"]) == 0:
        return {"chosen_on": None, "thresholds": {r: None for r in gallery.tree.ranks}, "threshold_choice": {}}
    emb, labels, _ = embed_split(run, store, "val", batch_size, workers)
    predicted, best, _ = gallery.classify(emb)
    thresholds, choice = {}, {}
    for r, rank in enumerate(gallery.tree.ranks):
        known = labels[:, r] != NULL
        c = choose_threshold(best[known, r], predicted[known, r] == labels[known, r], target_precision)
        thresholds[rank] = c.threshold if np.isfinite(c.threshold) else None
        choice[rank] = {"precision": c.precision, "coverage": c.coverage, "reached": c.reached,
                        "records": int(known.sum())}
    return {"chosen_on": "val", "thresholds": thresholds, "threshold_choice": choice}


# ------------------------------------------------------------------------------------------------ add


@dataclass
class Added:
    """What ``gallery add`` appended."""

    folder: Path
    records: int
    unreadable: int
    taxa: dict[str, list[str]]  # per rank, the taxa the added records name
    new: dict[str, list[str]]  # per rank, those that were not in the gallery before

    def summary(self) -> str:
        """One line for the log."""
        new = "; ".join(f"{r}: {', '.join(n)}" for r, n in self.new.items() if n) or "none"
        fine = list(self.taxa)[-1] if self.taxa else ""
        return (f"added {self.records} record(s) of {len(self.taxa.get(fine, []))} {fine} taxa to {self.folder} "
                f"({self.unreadable} unreadable); new taxa: {new}")


def add_to_gallery(run_dir: str | Path, source: str | Path, taxonomy: str | Path | None = None,
                   ranks: list[str] | None = None, batch_size: int = 64, workers: int | None = None) -> Added:
    """Embed the images of ``source`` and append them to the run's gallery with their taxa.

    ``source`` is a folder of class folders named by the finest of ``ranks`` (the coarser ranks from the
    ``taxonomy`` CSV, one column per rank, as ``prepare`` reads it), or a manifest CSV with a ``filepath`` column
    (relative to the manifest) and a column per rank. ``ranks`` are the run's ranks the source names (default: all
    of them that it has); a taxon the gallery does not hold gets a new id after the existing ones, and coarser ranks
    of a known taxon are filled in from the tree. A file that cannot be read is skipped and counted."""
    run = load_run(run_dir)
    gallery = Gallery.load(run.root)
    dim = int(gallery.meta.get("embedding_dim", gallery.embedding.shape[1]))
    rows = read_enrolment(Path(source), list(gallery.tree.ranks), ranks, Path(taxonomy) if taxonomy else None)
    tree, labels, new = extend_tree(gallery.tree, [names for _, names in rows])
    wanted = {str(p): i for i, (p, _) in enumerate(rows) if p.is_file()}  # a missing file counts as unreadable
    emb = np.zeros((len(rows), dim), np.float32)
    done = np.zeros(len(rows), dtype=bool)
    with torch_threads(run.config.trainer.cpu_threads):
        for batch, vectors in embed_inputs(run, list(wanted), batch_size, workers) if wanted else ():
            good = [b for b, e in enumerate(batch.errors) if not e]
            for v, b in enumerate(good):
                i = wanted[str(Path(batch.ids[b]["path"]).resolve())]
                if vectors.shape[1] != dim:
                    raise GalleryError(f"the run embeds in {vectors.shape[1]} dimensions but its gallery holds "
                                       f"{dim}; build the gallery again (taxotrain gallery build {run.root})")
                emb[i], done[i] = vectors[v], True
    gallery.tree = tree
    gallery.embedding = np.concatenate([gallery.embedding, emb[done]])
    gallery.labels = np.concatenate([gallery.labels, labels[done]])
    gallery.paths = np.concatenate([gallery.paths, np.array([str(p) for p, _ in rows], dtype=str)[done]])
    gallery.source = np.concatenate([gallery.source, np.full(int(done.sum()), ADDED, np.int8)])
    taxa = {rank: sorted({tree.names[r][i] for i in labels[done, r] if i != NULL}) for r, rank in enumerate(tree.ranks)}
    gallery.meta.setdefault("added", []).append({
        "source": str(source), "records": int(done.sum()), "unreadable": int((~done).sum()), "new_taxa": new,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return Added(gallery.save(run.root), int(done.sum()), int((~done).sum()), taxa, new)


def read_enrolment(source: Path, run_ranks: list[str], ranks: list[str] | None, taxonomy: Path | None
                   ) -> list[tuple[Path, list[str | None]]]:
    """``(image path, name per run rank or None)`` of each image of an enrolment source (see :func:`add_to_gallery`)."""
    from taxotrain.data.ingest import find_images

    bad = [r for r in ranks or [] if r not in run_ranks]
    if bad:
        raise GalleryError(f"--ranks: {', '.join(bad)} is not a rank of the run; its ranks are {', '.join(run_ranks)}")
    if source.is_file():
        header, table = _read_csv(source)
        if "filepath" not in header:
            raise GalleryError(f"{source}: a manifest needs a filepath column; its columns are {', '.join(header)}")
        given = ranks or [r for r in run_ranks if r in header]
        _need(source, header, given)
        rows = [((source.parent / row["filepath"]).resolve(), [row.get(r) or None if r in given else None
                                                                for r in run_ranks]) for row in table]
    elif source.is_dir():
        given = ranks or (list(run_ranks) if taxonomy else [run_ranks[-1]])
        finest = given[-1]
        lookup: dict[str, dict[str, str]] = {}
        if taxonomy is not None:
            header, table = _read_csv(taxonomy)
            _need(taxonomy, header, given)
            lookup = {row[finest]: row for row in table if row.get(finest)}
        rows = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if taxonomy is not None and folder.name not in lookup:
                raise GalleryError(f"{folder.name}: no row of {taxonomy} has it in its {finest} column; add it there "
                                   "(or drop --taxonomy to give only the finest rank)")
            names = {**lookup.get(folder.name, {}), finest: folder.name}
            rows += [(f.resolve(), [names.get(r) or None if r in given else None for r in run_ranks])
                     for f in find_images([folder])]
    else:
        raise GalleryError(f"{source} not found; give a folder of class folders or a manifest CSV")
    if not rows:
        raise GalleryError(f"{source}: no images found to add")
    seen: dict[Path, list[str | None]] = {}
    for path, names in rows:
        seen.setdefault(path, names)
    return list(seen.items())


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        table = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
        return [c.strip() for c in reader.fieldnames or []], table


def _need(path: Path, header: list[str], ranks: list[str]) -> None:
    missing = [r for r in ranks if r not in header]
    if missing or not ranks:
        raise GalleryError(f"{path}: no column for rank(s) {', '.join(missing) or 'of the run'}; its columns are "
                           f"{', '.join(header)}")


def extend_tree(tree: Tree, rows: list[list[str | None]]) -> tuple[Tree, np.ndarray, dict[str, list[str]]]:
    """The tree with the taxa ``rows`` name (one name or None per rank) added after the existing ones, each row's
    label ids ``[n, R]`` and the new names per rank. A known taxon's coarser ranks come from the tree; a row that
    puts a taxon under another parent than the tree's is a one-line error."""
    ranks = tree.ranks
    names = [list(n) for n in tree.names]
    ancestors = [[list(map(int, a)) for a in anc] for anc in tree.ancestors]
    lookup = [{n: i for i, n in enumerate(ns)} for ns in names]
    new: dict[str, list[str]] = {r: [] for r in ranks}
    labels = np.full((len(rows), len(ranks)), NULL, dtype=np.int64)
    for n, row in enumerate(rows):
        ids = [NULL] * len(ranks)
        for r, name in enumerate(row):
            if not name:
                continue
            if name not in lookup[r]:
                lookup[r][name] = len(names[r])
                names[r].append(name)
                ancestors[r].append(ids[:r] + [lookup[r][name]] + [NULL] * (len(ranks) - r - 1))
                new[ranks[r]].append(name)
            i = lookup[r][name]
            for q in range(r):
                known = ancestors[r][i][q]
                if known != NULL and ids[q] != NULL and known != ids[q]:
                    raise GalleryError(f"{ranks[r]} {name!r} is under {ranks[q]} {names[q][known]!r}, not "
                                       f"{names[q][ids[q]]!r}; correct the {ranks[q]} of its images")
                if ids[q] == NULL:
                    ids[q] = known
            ids[r] = i
        labels[n] = ids
    out = Tree(list(ranks), names, [np.asarray(a, dtype=np.int64).reshape(len(ns), len(ranks))
                                    for a, ns in zip(ancestors, names, strict=True)])
    return out, labels, new


# ------------------------------------------------------------------------------------------------ predicting


def gallery_embedder(run: LoadedRun, gallery: Gallery) -> Any:
    """``(model inputs of a batch, resolved tta) -> {"embedding": [n, D]}``: the run's L2-normalised embedding,
    averaged over the test-time views of ``input`` (then normalised again; other inputs, such as ``meta``, are the
    same for each view); checks that it has the gallery's width."""
    module = run.task.inference_module(run.model)
    dim = int(gallery.meta.get("embedding_dim", gallery.embedding.shape[1]))
    if int(getattr(run.model, "num_features", dim)) != dim:
        raise GalleryError(f"the gallery of {run.root} holds {dim}-dimensional embeddings but the run's model gives "
                           f"{run.model.num_features}; build it again with `taxotrain gallery build {run.root}`")

    def embed(inputs: dict[str, Any], tta: str) -> dict[str, np.ndarray]:
        return {"embedding": l2_normalize(run.task.embed_step(module, inputs, tta))}

    return embed
