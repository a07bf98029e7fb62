"""``taxotrain export``: write a trained run as an inference bundle that runs without the training stack.

::

    BUNDLE/model.onnx        raw input in (uint8 pixels [B, C, S, S], or a prepared series [B, C, L]), normalisation
                             inside the graph; out: probs_<rank> for every rank, then the embedding; dynamic batch axis
    BUNDLE/model.ts          the same module as TorchScript (--format torchscript|all)
    BUNDLE/spec.json         the task and its preprocessing spec (size, channels, pad fill, test-time views, ...)
    BUNDLE/taxonomy.json     ranks, class names per rank and every node's ancestors (the class maps)
    BUNDLE/rollup.json       the roll-up thresholds (chosen on val by evaluate; 0.5 when the run was never evaluated)
    BUNDLE/manifest.json     format, sha256 of every file, library versions, and the parity report

Export validates itself: it reloads what it wrote, runs it on real test-split records of the run's store beside
PyTorch, and refuses to finish (removing the bundle) when the probabilities differ by more than ``tolerance`` or a
top-1 label differs at any rank. The report (maximum difference, top-1 agreement per rank, milliseconds per record
for PyTorch eager and each exported format) goes into ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from taxotrain import __version__
from taxotrain.data.store import Store
from taxotrain.errors import TaxotrainError, brief
from taxotrain.files import write_text_atomic
from taxotrain.run import LoadedRun, load_run
from taxotrain.run_folder import RunPaths
from taxotrain_runtime.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MODEL_FILES
from taxotrain_runtime.records import DEFAULT_THRESHOLD

FORMATS = ("onnx", "torchscript")
OPSET = 18
TOLERANCE = 1e-4


class ExportError(TaxotrainError):
    """An export that cannot be written or does not match PyTorch; the message says which and why."""


@dataclass
class Exported:
    """A written bundle and its parity report."""

    folder: Path
    files: list[Path]
    parity: dict[str, Any]

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"{fmt}: max |dp| {r['max_abs_diff']:.1e}, top-1 agreement "
                 + "/".join(f"{v:.0%}" for v in r["top1_agreement"].values())
                 + f", {r['ms_per_record']:.2f} ms/record" for fmt, r in self.parity["formats"].items()]
        return (f"exported to {self.folder} ({', '.join(p.name for p in self.files)}); checked on "
                f"{self.parity['records']} {self.parity['split']} records against PyTorch eager "
                f"({self.parity['eager_ms_per_record']:.2f} ms/record): " + "; ".join(parts))


def export_run(run_dir: str | Path, out: str | Path, formats: Sequence[str] = ("onnx",), checkpoint: str = "best",
               store: str | Path | None = None, records: int = 1000, tolerance: float = TOLERANCE,
               batch_size: int = 64) -> Exported:
    """Export the run's ``checkpoint`` into the bundle folder ``out`` in ``formats`` (``onnx``, ``torchscript``),
    then check it against PyTorch on up to ``records`` test records of the run's store (or ``store``)."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ExportError(f"--format {', '.join(sorted(unknown)) or '(none)'}: choose onnx, torchscript or all")
    if records < 1 or batch_size < 1:
        raise ExportError(f"--records {records}: the parity check needs at least one record; give 1 or more")
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder; export into a new folder (nothing was changed)")
    run = load_run(run_dir, which=checkpoint)
    if run.task.fits_in_closed_form(run.model):
        raise ExportError(f"{run.root}: model.backbone={run.config.model.backbone} is fitted in closed form and its "
                          "transform is aeon's numba code, which ONNX and TorchScript cannot hold; predict with "
                          "`taxotrain predict RUN` (nothing was written)")
    try:
        run.task.check_exportable()  # e.g. a run with place/date metadata
    except TaxotrainError as exc:
        raise ExportError(f"{run.root}: {exc} (nothing was written)") from exc
    st = run.open_store(store, required=False)
    module = run.task.inference_module(run.model).eval()
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = [_write_model(module, run, out, fmt) for fmt in formats]
        written += _write_metadata(run, out, module.output_names)
        parity = check_parity(run, module, out, formats, st, records, batch_size)
        failed = [f"{fmt}: max |dp| {r['max_abs_diff']:.1e}, top-1 agreement {r['top1_agreement']}"
                  for fmt, r in parity["formats"].items()
                  if r["max_abs_diff"] > tolerance or min(r["top1_agreement"].values()) < 1.0]
        if failed:
            raise ExportError(f"the exported model does not match PyTorch on {parity['records']} test records ("
                              f"{'; '.join(failed)}; tolerance {tolerance:g}); nothing was kept")
        manifest = _manifest(run, out, written, parity)
        written.append(write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n"))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Exported(out, written, parity)


def _write_model(module: torch.nn.Module, run: LoadedRun, out: Path, fmt: str) -> Path:
    """One exported model file; the input is raw (normalisation inside), the batch axis dynamic."""
    example = run.task.example_input(2)
    path = out / MODEL_FILES[fmt]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            if fmt == "onnx":
                batch = torch.export.Dim("batch", min=1, max=65536)
                torch.onnx.export(module, (example,), str(path), input_names=["input"],
                                  output_names=module.output_names, dynamic_shapes={"input": {0: batch}},
                                  opset_version=OPSET, dynamo=True, verbose=False, external_data=False)
            else:
                torch.jit.trace(module, (example,), strict=False).save(str(path))
        except Exception as exc:  # exporters raise many types; the message says which model failed and why
            raise ExportError(f"{fmt} export of {run.config.model.backbone} failed: {brief(exc, 300)}") from exc
    return path


def _write_metadata(run: LoadedRun, out: Path, outputs: list[str]) -> list[Path]:
    """spec.json (task, preprocessing, output names), taxonomy.json and rollup.json."""
    thresholds_file = RunPaths(run.root).rollup
    rollup = json.loads(thresholds_file.read_text()) if thresholds_file.is_file() else {
        "thresholds": {r: DEFAULT_THRESHOLD for r in run.taxonomy.ranks}, "chosen_on": None,
        "note": "the run was never evaluated; taxotrain evaluate chooses thresholds on val"}
    spec = {"task": run.task.name, "spec": run.task.spec.to_dict(), "input": "input", "outputs": outputs,
            "id_columns": list(run.task.id_columns), "extra_columns": list(run.task.extra_columns),
            "backbone": run.config.model.backbone, "head": run.config.model.head}
    return [write_text_atomic(out / "spec.json", json.dumps(spec, indent=2) + "\n"),
            write_text_atomic(out / "taxonomy.json", json.dumps(run.taxonomy.to_dict()) + "\n"),
            write_text_atomic(out / "rollup.json", json.dumps(rollup, indent=2) + "\n")]


def check_parity(run: LoadedRun, module: torch.nn.Module, out: Path, formats: Sequence[str], store: Store | None,
                 records: int, batch_size: int = 64) -> dict[str, Any]:
    """Run the written models on real test records (random inputs when the store is gone) beside PyTorch eager:
    the largest probability difference, top-1 agreement per rank and milliseconds per record of each."""
    from taxotrain_runtime.bundle import load_session

    batches, split = _parity_inputs(run, store, records, batch_size)
    ranks = run.taxonomy.ranks
    eager, eager_s = _collect(lambda x: [t.numpy() for t in module(torch.from_numpy(x))], batches)
    report: dict[str, Any] = {"records": int(sum(len(b) for b in batches)), "split": split,
                              "eager_ms_per_record": 1000 * eager_s / max(1, sum(len(b) for b in batches)),
                              "batch_size": batch_size, "formats": {}}
    for fmt in formats:
        if fmt == "onnx":
            session = load_session(out / MODEL_FILES[fmt])

            def run_onnx(x: np.ndarray, session: Any = session) -> list[np.ndarray]:
                return session.run(None, {"input": x})
            got, seconds = _collect(run_onnx, batches)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; TorchScript files still load
                scripted = torch.jit.load(str(out / MODEL_FILES[fmt]), map_location="cpu").eval()
            got, seconds = _collect(lambda x, m=scripted: [t.numpy() for t in m(torch.from_numpy(x))], batches)
        report["formats"][fmt] = {
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(eager[: len(ranks)], got[: len(ranks)],
                                                                            strict=True))),
            "max_abs_diff_embedding": float(np.abs(eager[-1] - got[-1]).max()),
            "top1_agreement": {r: float((eager[i].argmax(1) == got[i].argmax(1)).mean()) for i, r in enumerate(ranks)},
            "ms_per_record": 1000 * seconds / max(1, report["records"])}
    return report


def _parity_inputs(run: LoadedRun, store: Store | None, records: int, batch_size: int
                   ) -> tuple[list[np.ndarray], str]:
    if store is None or len(store.splits["test"]) == 0:
        torch.manual_seed(0)
        return [run.task.example_input(batch_size).numpy() for _ in range(max(1, records // batch_size))], "random"
    dataset = run.task.inference_dataset(store, "test")
    take = torch.utils.data.Subset(dataset, range(min(records, len(dataset))))
    return [b["input"].numpy() for b in DataLoader(take, batch_size=batch_size)], "test"


def _collect(fn: Any, batches: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Outputs of ``fn`` over every batch, concatenated per output, and the seconds it took (after one warm-up
    call, so that lazy initialisation is not counted)."""
    outputs: list[list[np.ndarray]] = []
    with torch.no_grad():
        fn(batches[0])
    start = time.perf_counter()
    with torch.no_grad():
        for x in batches:
            for i, y in enumerate(fn(x)):
                if len(outputs) <= i:
                    outputs.append([])
                outputs[i].append(np.asarray(y))
    return [np.concatenate(o) for o in outputs], time.perf_counter() - start


def _manifest(run: LoadedRun, out: Path, files: list[Path], parity: dict[str, Any]) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import timm

    return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "task": run.task.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": str(run.root),
            "checkpoint": str(run.checkpoint), "opset": OPSET,
            "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
            "versions": {"taxotrain": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "parity": parity}
