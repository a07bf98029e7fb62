"""Exporting a trained run as an inference bundle (``taxotrain export``); see :mod:`taxotrain.export.bundle`."""

from taxotrain.export.bundle import Exported, ExportError, export_run

__all__ = ["ExportError", "Exported", "export_run"]
