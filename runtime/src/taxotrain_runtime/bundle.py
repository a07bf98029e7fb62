"""An exported bundle (``taxotrain export``): its files, checked against the manifest's sha256, and its model run on
ONNX Runtime. Nothing in a bundle is ever unpickled: the model is ONNX, everything else JSON."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taxotrain_runtime.images import ImageRefused, find_images, load_image, pad_value, resize_pad
from taxotrain_runtime.records import PredictionRecord, make_records, rank_columns, read_rollup
from taxotrain_runtime.tree import Tree
from taxotrain_runtime.views import views

BUNDLE_FORMAT = "taxotrain-bundle"
BUNDLE_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}


class BundleError(ValueError):
    """A folder that is not a usable bundle, or inputs it cannot take; the message says which and how to fix it."""


def is_bundle(folder: str | Path) -> bool:
    """Whether ``folder`` holds an exported bundle (a ``manifest.json`` of the bundle format)."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def load_session(path: Path) -> Any:
    """An ONNX Runtime session on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class Bundle:
    """A bundle's spec, tree, roll-up thresholds and ONNX model."""

    folder: Path
    spec: dict[str, Any]
    tree: Tree
    thresholds: list[float]
    thresholds_source: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path) -> Bundle:
        """Read a bundle, refusing one whose files are missing, changed since export, or of a newer format."""
        folder = Path(folder)
        if not is_bundle(folder):
            raise BundleError(f"{folder} is not a taxotrain bundle (no manifest.json of format {BUNDLE_FORMAT}); "
                              "write one with `taxotrain export RUN --out BUNDLE`")
        manifest = json.loads((folder / "manifest.json").read_text())
        if int(manifest.get("format_version", 0)) > BUNDLE_VERSION:
            raise BundleError(f"{folder} has bundle format {manifest['format_version']}, newer than this runtime "
                              f"reads ({BUNDLE_VERSION}); upgrade taxotrain-runtime")
        for name, digest in manifest["files"].items():
            path = folder / name
            if not path.is_file():
                raise BundleError(f"{path} is missing; the bundle is incomplete, export it again")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise BundleError(f"{path} differs from the file exported (sha256 mismatch); export the bundle again")
        if MODEL_FILES["onnx"] not in manifest["files"]:
            raise BundleError(f"{folder} holds no ONNX model; export it with --format onnx (or all)")
        try:
            spec = json.loads((folder / "spec.json").read_text())
            tree = Tree.from_dict(json.loads((folder / "taxonomy.json").read_text()))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{folder}: spec.json or taxonomy.json is malformed ({exc!r}); export it again") from exc
        missing = [k for k in ("task", "spec", "id_columns", "extra_columns") if k not in spec]
        if missing or "kind" not in spec.get("spec", {}):
            raise BundleError(f"{folder}/spec.json lacks {', '.join(missing) or 'spec.kind'}; export it again")
        thresholds, source = read_rollup(folder / "rollup.json", tree.ranks)
        return cls(folder, spec, tree, thresholds, source, manifest)

    @property
    def kind(self) -> str:
        """The input kind of the model: ``image`` or ``signal``."""
        return str(self.spec["spec"]["kind"])

    @property
    def session(self) -> Any:
        if not hasattr(self, "_session"):
            self._session = load_session(self.folder / MODEL_FILES["onnx"])
        return self._session

    def resolve_tta(self, tta: str) -> str:
        """``auto`` = the test-time views the run trained for (images); signals take none."""
        if self.kind != "image":
            if tta not in ("auto", "none"):
                raise BundleError(f"--tta {tta} is for image bundles; a {self.kind} bundle takes --tta none")
            return "none"
        return str(self.spec["spec"].get("tta", "none")) if tta == "auto" else tta

    def probabilities(self, batch: np.ndarray, tta: str = "none") -> dict[str, np.ndarray]:
        """Probabilities per rank of a batch of raw inputs, averaged over the test-time views."""
        ranks = self.tree.ranks
        shown = views(batch, tta) if tta != "none" else [batch]
        total = None
        for view in shown:
            out = self.session.run(None, {"input": np.ascontiguousarray(view)})[: len(ranks)]
            total = out if total is None else [t + o for t, o in zip(total, out, strict=True)]
        return {rank: p / len(shown) for rank, p in zip(ranks, total, strict=True)}  # type: ignore[arg-type]

    def prepare_image(self, path: Path) -> np.ndarray:
        """A file as the model takes it: decoded, resized and padded, ``uint8`` ``[C, S, S]``."""
        s = self.spec["spec"]
        image = load_image(path, int(s["channels"]))
        fill = pad_value(s.get("pad_fill", "edge"), s["mean"])
        return np.ascontiguousarray(resize_pad(image, int(s["image_size"]), fill).transpose(2, 0, 1))

    def columns(self, topk: int) -> list[str]:
        """The prediction CSV's columns, as ``taxotrain predict`` writes them."""
        return [*self.spec["id_columns"], *rank_columns(self.tree, topk), *self.spec["extra_columns"], "error"]

    def predict_images(self, inputs: Sequence[str | Path], batch_size: int = 64, tta: str = "auto",
                       topk: int = 5) -> Iterator[list[PredictionRecord]]:
        """Records of the image files and folders (searched recursively) in ``inputs``, batch by batch."""
        if self.kind != "image":
            raise BundleError(f"this is a {self.kind} bundle; taxotrain-runtime predicts image bundles (use "
                              "`taxotrain predict BUNDLE ...` for series)")
        tta = self.resolve_tta(tta)
        files = find_images(list(inputs))
        if not files:
            raise BundleError(f"no image files found in {', '.join(map(str, inputs))}")
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            arrays, errors = [], []
            for path in chunk:
                try:
                    arrays.append(self.prepare_image(path))
                    errors.append("")
                except (ImageRefused, OSError) as exc:
                    errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            probs = self.probabilities(np.stack(arrays), tta) if arrays else {}
            yield make_records(probs, self.tree, [{"path": str(p)} for p in chunk], errors, None, self.thresholds,
                               topk)
