"""taxotrain: train, tune, evaluate and ship taxonomy-aware classifiers for biodiversity data.

The library behind the ``taxotrain`` command; every command is one call here::

    import taxotrain

    cfg = taxotrain.load_config("configs/plankton.yaml", ["data.store=plankton.h5", "run.dir=runs/p"])
    taxotrain.prepare("images/", "plankton.h5", ranks=["group", "subgroup", "class"], taxonomy="taxonomy.csv")
    result = taxotrain.fit(cfg)
    taxotrain.evaluate(result.run_dir)
    taxotrain.predict(result.run_dir, ["new_images/"], "predictions.csv")
    taxotrain.list_tasks(), taxotrain.list_heads(), taxotrain.list_signal_nets()

Heavy modules (torch, Lightning, Optuna) load on first use, so ``import taxotrain`` and config checks stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from taxotrain.tasks import create_task, get_task, list_tasks, register_task  # noqa: E402 (registers built-in tasks)

# public name -> (module, attribute), imported on first access
_LAZY = {
    "Config": ("taxotrain.config", "Config"),
    "load_config": ("taxotrain.config", "load_config"),
    "default_config": ("taxotrain.config", "default_config"),
    "prepare": ("taxotrain.data.prepare", "prepare"),
    "prepare_images": ("taxotrain.data.prepare_images", "prepare_images"),
    "prepare_signals": ("taxotrain.data.prepare_signals", "prepare_signals"),
    "Store": ("taxotrain.data.store", "Store"),
    "fit": ("taxotrain.training.engine", "fit"),
    "evaluate": ("taxotrain.evaluation.report", "evaluate_run"),
    "compare": ("taxotrain.evaluation.compare", "compare_runs"),
    "predict": ("taxotrain.inference.predict", "write_predictions"),
    "embed": ("taxotrain.inference.embed", "write_embeddings"),
    "build_gallery": ("taxotrain.inference.gallery", "build_gallery"),
    "add_to_gallery": ("taxotrain.inference.gallery", "add_to_gallery"),
    "load_run": ("taxotrain.run", "load_run"),
    "tune": ("taxotrain.tuning", "tune"),
    "run_demo": ("taxotrain.demo", "run_demo"),
    "TaxotrainError": ("taxotrain.errors", "TaxotrainError"),
    "register_head": ("taxotrain.models.heads", "register_head"),
    "create_head": ("taxotrain.models.heads", "create_head"),
    "list_heads": ("taxotrain.models.heads", "list_heads"),
    "register_signal_net": ("taxotrain.models.signal_nets", "register_signal_net"),
    "create_signal_net": ("taxotrain.models.signal_nets", "create_signal_net"),
    "list_signal_nets": ("taxotrain.models.signal_nets", "list_signal_nets"),
    "create_backbone": ("taxotrain.models.backbones", "create_backbone"),
    "register_reader": ("taxotrain.data.signals", "register_reader"),
    "create_reader": ("taxotrain.data.signals", "create_reader"),
    "list_readers": ("taxotrain.data.signals", "list_readers"),
}

__all__ = ["__version__", "create_task", "get_task", "list_tasks", "register_task", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'taxotrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
