"""``taxotrain prepare``: verify a dataset and write one HDF5 store, whichever kind of source it is.

Images (a folder of class folders, or a CSV manifest) go through :func:`prepare_images`; 1-D signals (Capfinder CSVs,
UCR ``.ts`` files, NumPy arrays) through :func:`prepare_signals`. Both write with the same
:class:`~taxotrain.data.store.StoreWriter`. :func:`prepare` picks one by the store kind, detecting it from the source
when ``kind`` is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from taxotrain.data.ingest import IngestError
from taxotrain.data.prepare_images import prepare_images
from taxotrain.data.prepare_signals import prepare_signals
from taxotrain.data.report import PrepareResult
from taxotrain.data.signals import source_kind
from taxotrain.data.specs import IMAGE_KIND, SIGNAL_KIND

PREPARERS: dict[str, Callable[..., PrepareResult]] = {IMAGE_KIND: prepare_images, SIGNAL_KIND: prepare_signals}


def prepare(source: str | Path | None, out: str | Path, kind: str | None = None, **options: Any) -> PrepareResult:
    """Prepare ``source`` into the store ``out``; ``options`` are those of :func:`prepare_images` (``ranks``,
    ``taxonomy``, ``manifest``, ``val``, ``test``, ``seed``, ``workers``) or :func:`prepare_signals` (``options``,
    ``fmt``, ``classes``).

    Example:
        >>> from taxotrain.data.signals import ucr_folder
        >>> result = prepare(ucr_folder("GunPoint"), "gunpoint.h5")  # doctest: +SKIP
    """
    kind = kind or source_kind(source, options.get("manifest"))
    if kind not in PREPARERS:
        raise IngestError(f"unknown store kind {kind!r}; choose one of: {', '.join(PREPARERS)} (or none to detect it)")
    return PREPARERS[kind](Path(source) if source is not None else None, Path(out), **options)
