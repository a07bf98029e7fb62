"""The task protocol and its registry: everything that differs between tasks, in one object per task.

A task is composed of two parts:

- its **inputs** (a modality: image, signal): the preprocessing spec, the datasets and transforms, an example batch,
  the backbone, and reading files to predict. A subclass of :class:`Task` implements these hooks.
- its **objective** (what the model learns and outputs): the loss and its named parts, the metrics and the monitor
  names they allow, and turning outputs into prediction records. :class:`Task` composes one in (per-rank
  classification today) and forwards to it.

The Lightning module, ``fit``, evaluate, predict and compare call only these hooks, so adding a task touches
``tasks/`` and nothing else. Heavy libraries (torch, timm, torchvision) are imported inside the hooks: importing the
registry, listing tasks and validating a config stay fast.

Example:
    >>> from taxotrain.tasks import create_task, list_tasks
    >>> list_tasks()
    ['embedding', 'image', 'prior', 'signal']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from taxotrain.config import (
    MEAN,
    Config,
    ConfigError,
    TaskRules,
    candidate_names,
    register_task_rules,
    with_model,
)
from taxotrain.data.specs import InputSpec, spec_from_checkpoint
from taxotrain.errors import TaxotrainError
from taxotrain.registry import Registry
from taxotrain.tasks.metadata import MetadataHooks
from taxotrain.taxonomy import Taxonomy
from taxotrain_runtime.records import PredictionRecord

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from taxotrain.data.store import Store
    from taxotrain.stages import Stage
    from taxotrain.tasks.classification import RankClassification


# settings of the embedding task's margin losses: a one-line error on the other tasks (see their rules)
EMBEDDING_ONLY = "task: embedding (margin losses; docs/embeddings.md)"
EMBEDDING_KEYS = {key: EMBEDDING_ONLY for key in (
    "model.embed_dim", "optim.centre_lr_scale", "loss.margin", "loss.scale", "loss.m1", "loss.m2", "loss.m3",
    "loss.sub_centers", "loss.sample_rate")}


# settings of the place/date prior: a one-line error on the other tasks
PRIOR_ONLY = "task: prior (a place/date prior; docs/metadata.md)"
PRIOR_KEYS = {key: PRIOR_ONLY for key in ("loss.prior_background", "model.prior_blocks")}


class TaskError(TaxotrainError):
    """A task asked for something it does not do (e.g. flipped test-time views of a signal)."""


@dataclass
class StepOutput:
    """One training or validation step: the loss to minimise, its named parts (``loss``, ``<rank>/loss``, ...) for
    the loggers, the model's outputs (logits per rank) and the batch size."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    batch_size: int


@dataclass
class InputBatch:
    """A batch of inputs to predict: ``input`` stacks the rows of the readable records (in order); every record has
    its id columns, its error (``""`` when readable) and any extra columns (e.g. a label the file carried)."""

    input: torch.Tensor | None
    ids: list[dict[str, str]]
    errors: list[str]
    extra: list[dict[str, str]] = field(default_factory=list)
    # place/date metadata of the readable records, in the order of ``input``: every component's value arrays and
    # ``<component>_valid`` masks (data/metadata_inputs.py); None when the inputs carry none (plain files)
    metadata: dict[str, np.ndarray] | None = None


class Task(MetadataHooks):
    """Base of every registered task (see the module docstring). Subclasses set the class attributes below and
    implement the input hooks; :func:`register_task` makes them available as ``task: <name>``."""

    name: ClassVar[str] = ""
    rules: ClassVar[TaskRules]  # defaults and the config keys that do nothing for this task
    spec_type: ClassVar[type[InputSpec]]
    store_kind: ClassVar[str]  # the kind of store (``Store.kind``) the task trains on
    id_columns: ClassVar[tuple[str, ...]] = ("path",)  # prediction CSV columns that identify a record
    extra_columns: ClassVar[tuple[str, ...]] = ()  # prediction CSV columns an input may fill (e.g. true_class)
    # whether evaluate scores the run's embeddings by retrieval (test queries against the train split), few-shot
    # and open set (the store's held-out classes); see evaluation/embedding_eval.py
    evaluates_retrieval: ClassVar[bool] = False

    def __init__(self, config: Config, taxonomy: Taxonomy, spec: InputSpec,
                 class_counts: list[np.ndarray] | None = None) -> None:
        self.config = config
        self.taxonomy = taxonomy
        self.spec = spec
        # train records per class at each rank, as training sees them (a new fit; None for a restored run): the
        # class weights and logit adjustment of imbalanced data use them
        self.class_counts = class_counts
        self._check_rank_names()
        self.objective: RankClassification = self.make_objective()
        self.progress, self.step = 0.0, 0  # of the training, for the metadata masking schedule (set_progress)

    def make_objective(self) -> RankClassification:
        """The objective composed into this task: per-rank classification."""
        from taxotrain.tasks.classification import RankClassification

        return RankClassification(self.config, self.taxonomy, self.class_counts)

    # ------------------------------------------------------------------ inputs: a subclass implements these

    @classmethod
    def spec_from_store(cls, config: Config, store: Store, stages: list[Stage]) -> InputSpec:
        """The preprocessing spec of a new fit, from the config, the store's statistics and the stages."""
        raise NotImplementedError

    @classmethod
    def spec_from_checkpoint(cls, info: dict[str, Any], config: Config) -> InputSpec:
        """The spec saved in a checkpoint's taxotrain metadata (or built from an older checkpoint's ``meta``)."""
        return spec_from_checkpoint(info)

    def build_backbone(self, pretrained: bool, drop_path_rate: float) -> nn.Module:
        """The backbone (pooled features, ``num_features`` wide) for the spec's input channels."""
        raise NotImplementedError

    def dataset(self, store: Store, split: str, train: bool = False, stage: Stage | None = None,
                labels: np.ndarray | None = None) -> Dataset:
        """Records of ``split`` as dict samples (``input``, ``target``, ``index``), with training transforms (at
        ``stage``'s settings) or evaluation ones; ``labels`` replaces the store's (e.g. some hidden)."""
        raise NotImplementedError

    def example_batch(self, batch_size: int, stage: Stage | None = None) -> dict[str, torch.Tensor]:
        """A batch of the shape training feeds (random values; for the GPU batch-size probe)."""
        raise NotImplementedError

    def input_preprocess(self) -> nn.Module:
        """The normalisation that turns a raw input into what the model was trained on (inside exported models)."""
        raise NotImplementedError

    def inference_dataset(self, store: Store, split: str) -> Dataset:
        """Records of ``split`` as raw inputs prepared the way ``predict`` and exported bundles prepare files (dict
        samples: ``input``, ``target``, ``index``); what evaluate scores."""
        raise NotImplementedError

    def inference_loader(self, store: Store, split: str, batch_size: int | None = None,
                         workers: int | None = None) -> DataLoader:
        """:meth:`inference_dataset` of ``split`` in record order, ``batch_size`` at a time (default: twice
        ``data.batch_size``) with ``workers`` processes (default: :meth:`workers`): what evaluate, embed and the
        baselines read."""
        from torch.utils.data import DataLoader

        size = batch_size or self.config.data.batch_size * 2
        return DataLoader(self.inference_dataset(store, split), batch_size=size, shuffle=False,
                          num_workers=self.workers(workers))

    def example_input(self, batch_size: int) -> torch.Tensor:
        """A batch of raw inputs of the inference shape (what export traces with)."""
        raise NotImplementedError

    def prediction_batches(self, inputs: Sequence[str | Path], batch_size: int, workers: int) -> Iterator[InputBatch]:
        """Read the files and folders a user gives ``predict`` as batches of raw inputs (as
        :meth:`inference_dataset` prepares them), an unreadable record as an error."""
        raise NotImplementedError

    def views(self, x: torch.Tensor, tta: str) -> list[torch.Tensor]:
        """Test-time views of an input batch that ``tta`` (already resolved by :meth:`resolve_tta`) names."""
        return [x]

    def resolve_tta(self, tta: str) -> str:
        """The view set ``--tta`` asks for; ``auto`` = the views training made the model invariant to."""
        if tta not in ("auto", "none"):
            raise TaskError(f"--tta {tta} is for image runs; a {self.name} run takes --tta none (or auto)")
        return "none"

    def workers(self, override: int | None = None) -> int:
        """DataLoader worker processes: ``override``, or ``data.num_workers`` (``auto`` = one per core, at most 8)."""
        import os

        value = self.config.data.num_workers if override is None else override
        return min(8, os.cpu_count() or 1) if value == "auto" else int(value)

    def epoch_columns(self, stage: Stage) -> dict[str, Any]:
        """Extra ``metrics.csv`` columns of an epoch trained in ``stage`` (e.g. the image size)."""
        return {}

    def thumbnail(self, store: Store, index: int, size: int = 96) -> bytes | None:
        """A small PNG of record ``index`` for the report's gallery of mistakes (``None``: the task shows none)."""
        return None

    def baselines(self, store: Store, split: str) -> dict[str, dict[str, Any]]:
        """Reference models fitted on the same train split and scored on ``split`` (``metrics.json`` -> baseline)."""
        return {}

    @classmethod
    def check_store(cls, store: Store) -> None:
        """Refuse a store this task cannot read, in one line."""
        if store.kind != cls.store_kind:
            readers = [name for name, task in TASKS.items() if task.store_kind == store.kind]
            fix = f"set task: {' or '.join(readers)}" if readers else "no registered task reads it"
            raise ConfigError(f"{store.path} is a {store.kind} store but task: {cls.name} reads {cls.store_kind} "
                              f"stores; {fix} (taxotrain init-config --task {readers[0] if readers else '...'} "
                              "writes its defaults)")

    def _check_rank_names(self) -> None:
        ranks, cfg = self.taxonomy.ranks, self.config
        named = [("mix.within", [cfg.mix.within] if cfg.mix.within else []),
                 ("loss.rank_weights", list(cfg.loss.rank_weights or {})),
                 ("data.hide_labels", list(cfg.data.hide_labels or {})),
                 ("data.sampler_rank", [cfg.data.sampler_rank] if cfg.data.sampler_rank else [])]
        for key, values in named:
            bad = [v for v in values if v not in ranks]
            if bad:
                raise ConfigError(f"bad value for '{key}': {', '.join(map(repr, bad))} is not a rank of the store; "
                                  f"its ranks are {', '.join(ranks)}")

    def check_config(self) -> None:
        """Check every config value that names a rank or a metric against the taxonomy, right after the store is
        opened (``fit`` and ``tune`` call it): one line naming the key, what it got and what it takes. (The keys
        that name ranks were checked when the task was created.)"""
        cfg = self.config
        allowed = self.monitors()
        for key, value in (("trainer.monitor", cfg.trainer.monitor), ("tune.metric", cfg.tune.metric)):
            if value != "auto" and value not in allowed:
                raise ConfigError(f"bad value for '{key}': {value!r}; allowed: auto, {', '.join(allowed)}")
        few = [f"{rank} ({n})" for rank, n in zip(self.taxonomy.ranks, self.taxonomy.num_classes, strict=True) if n < 2]
        if few:
            raise ConfigError(f"the store has fewer than 2 classes at rank(s) {', '.join(few)}: nothing to classify "
                              "there; prepare a dataset with at least 2 classes at every rank (for images, or leave "
                              "the rank out of --ranks)")

    def monitor(self) -> str:
        """``trainer.monitor``, with ``auto`` resolved (:meth:`default_monitor`)."""
        return self.default_monitor() if self.config.trainer.monitor == "auto" else self.config.trainer.monitor

    # ------------------------------------------------------------------ the model: backbone + objective head

    def build_model(self, pretrained: bool = True, drop_path_rate: float | None = None) -> nn.Module:
        """Backbone and head; ``pretrained=False`` skips loading weights (a checkpoint supplies them)."""
        if self.config.model.backbone == MEAN:  # one member per candidate, each as if it were the backbone
            members = []
            for name in candidate_names(self.config):
                members.append(self.with_backbone(name).build_model(pretrained, drop_path_rate))
                if not self.fits_in_closed_form(members[-1]):
                    raise ConfigError(f"bad value for 'model.candidates': {name!r} is trained by gradient, not in "
                                      "closed form; average networks with `taxotrain ensemble` after fitting them")
            return self.ensemble_model(members)
        rate = self.config.model.drop_path_rate if drop_path_rate is None else drop_path_rate
        return self.objective.build_model(self.fuse_metadata(self.build_backbone(pretrained, rate)))

    def with_backbone(self, name: str, **model_settings: Any) -> Task:
        """This task with ``model.backbone`` set to ``name`` and any other ``model.*`` settings given (same taxonomy
        and spec)."""
        return type(self)(with_model(self.config, backbone=name, **model_settings), self.taxonomy, self.spec,
                          self.class_counts)

    def ensemble_model(self, members: list[nn.Module]) -> nn.Module:
        """One model from trained ``members`` of this task that take the same inputs (``taxotrain ensemble``)."""
        return self.objective.ensemble(members)

    # ------------------------------------------------------------------ the objective: forwarded

    def set_stage(self, stage: Stage) -> None:
        """Apply a progressive stage's objective settings (its mixup alpha) for the epochs it trains."""
        self.objective.set_mixup(stage.mixup_alpha)

    def modules(self) -> dict[str, nn.Module]:
        """Stateful parts of the objective (loss buffers, GradNorm weights) the trainer registers and checkpoints."""
        return self.objective.modules()

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Loss (with its named parts) of a training batch, mixing and rank weighting included; a run with metadata
        masks it first (its part ``metadata/missing``: the share of records left with none)."""
        import torch

        batch = self.mask_training_metadata(batch)
        out = self.objective.training_step(model, batch)
        if self.metadata_fields and self.metadata_key in batch:
            missing = ~torch.isfinite(batch[self.metadata_key]).any(dim=1)
            out.parts["metadata/missing"] = missing.float().mean().detach()
        return out

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Loss and outputs of a validation batch (for :meth:`metrics`)."""
        return self.objective.validation_step(model, batch)

    def param_groups(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        """Parameters that get their own optimizer group, each list with its learning-rate multiplier (the margin
        heads' class centres of ``task: embedding``); every other parameter stays in the default groups."""
        return self.objective.param_groups(model)

    def fits_in_closed_form(self, model: nn.Module) -> bool:
        """Whether ``model`` is fitted in one closed-form pass over the train split (the ROCKET family) instead of
        gradient epochs; ``fit`` then calls :meth:`fit_closed_form` (``training/closed_form.py``)."""
        return bool(getattr(getattr(model, "backbone", model), "closed_form", False))

    def reset_temperatures(self, model: nn.Module) -> None:
        """Set the model's calibration temperatures back to 1 (``fit`` does before training: raw logits)."""
        from taxotrain.models.temperature import reset_temperatures

        reset_temperatures(model)

    def closed_form_records(self, store: Store) -> tuple[torch.Tensor, np.ndarray]:
        """The records a closed-form model is fitted on, stacked as validation feeds them (inputs ``[N, ...]``,
        targets ``[N, ranks]``): the train split with ``data.hide_labels`` applied, then the val split when
        ``data.fit_on`` is ``train+val``."""
        import numpy as np
        import torch

        from taxotrain.data.dataset import hide_labels, stack_dataset

        labels = hide_labels(store, self.config.data.hide_labels, self.config.run.seed)
        x, targets = stack_dataset(self.dataset(store, "train", labels=labels))
        if self.config.data.fit_on == "train+val":
            x_val, y_val = stack_dataset(self.dataset(store, "val"))
            x, targets = torch.cat([x, x_val]), np.concatenate([targets, y_val])
        return x, targets

    def fit_closed_form(self, model: nn.Module, x: torch.Tensor, targets: np.ndarray) -> dict[str, Any]:
        """Fit a closed-form ``model`` on the train split's inputs ``x`` (as validation feeds them) and ``targets``;
        returns what was chosen per rank (penalty, leave-one-out top-1 and log loss, temperature)."""
        return self.objective.fit_closed_form(model, x, targets)

    def metrics(self) -> nn.Module:
        """Fresh validation metrics: ``update(outputs, batch)``, ``compute() -> {name: value}``, ``reset()``."""
        return self.objective.metrics()

    def monitors(self) -> list[str]:
        """The metric names ``trainer.monitor`` and ``tune.metric`` may name (``val/loss``, ``val/<rank>/top1``...)."""
        return ["val/loss", *(f"val/{name}" for name in self.objective.metric_names())]

    def default_monitor(self) -> str:
        """What ``trainer.monitor: auto`` selects."""
        return f"val/{self.objective.default_metric()}"

    def inference_module(self, model: nn.Module) -> nn.Module:
        """The model as inference runs it and export writes it: raw input (what :meth:`inference_dataset` and
        :meth:`prediction_batches` give) -> normalisation -> model -> probabilities per rank and the embedding."""
        return self.objective.inference(model, self.input_preprocess())

    def predict_step(self, module: nn.Module, batch: dict[str, torch.Tensor], tta: str = "none"
                     ) -> dict[str, np.ndarray]:
        """Probabilities per rank of a batch of raw inputs, averaged over the test-time views; ``module`` is the
        :meth:`inference_module` of the trained model."""
        return self.objective.predict(module, self.views(batch["input"], tta), _extra(batch))

    def embed_step(self, module: nn.Module, batch: dict[str, torch.Tensor], tta: str = "none") -> np.ndarray:
        """The embedding ``[B, D]`` of a batch of raw inputs (float32, as the model gives it: unit length for
        ``task: embedding``, the pooled features of a classifier); ``module`` is the :meth:`inference_module`.
        With test-time views (``tta``, already resolved), the mean of the views' embeddings as the model gives
        them (a classifier's features keep their scale; search normalises the mean as it normalises one view)."""
        import numpy as np

        extra = _extra(batch)
        views = self.views(batch["input"], tta)
        if len(views) == 1:
            return self.objective.embed(module, views[0], extra)
        return np.mean([self.objective.embed(module, v, extra) for v in views], axis=0).astype(np.float32)

    def records(self, outputs: dict[str, np.ndarray], batch: InputBatch, thresholds: list[float] | None,
                topk: int = 5) -> list[PredictionRecord]:
        """One prediction record per record of ``batch`` (errors included), from :meth:`predict_step`'s outputs."""
        return self.objective.records(outputs, batch, thresholds, topk)

    def prediction_row(self, record: PredictionRecord) -> dict[str, Any]:
        """A prediction record as a row of the prediction CSV."""
        return self.objective.row(record)

    def prediction_columns(self, topk: int) -> list[str]:
        """The prediction CSV's columns, in order."""
        return [*self.id_columns, *self.objective.columns(topk), *self.extra_columns, "error"]

    def describe_input(self) -> str:
        """What the model takes, for logs and reports (``48 px, 1 channel(s)``)."""
        return self.spec.describe()


def _extra(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model inputs of a batch besides ``input`` (e.g. ``meta``)."""
    return {k: v for k, v in batch.items() if k not in ("input", "target", "index")}


# ------------------------------------------------------------------------------------------------ registry

TASKS: Registry[type[Task]] = Registry("task", choices="task takes one of", error=ConfigError)


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator that makes a :class:`Task` subclass available as ``task: <name>`` in configs (with its
    ``rules``: default backbone, ``init-config`` defaults and the keys that do nothing for it)."""

    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS.add(name, cls)
        register_task_rules(name, cls.rules)
        return cls

    return wrap


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return TASKS.names()


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``; a one-line error listing the registered ones otherwise."""
    return TASKS.get(name)


def create_task(config: Config, taxonomy: Taxonomy | None = None, spec: InputSpec | None = None,
                store: Store | None = None, stages: list[Stage] | None = None) -> Task:
    """The task ``config.task`` names, for a new fit (give ``store``: the taxonomy and spec come from it) or for a
    trained run (give ``taxonomy`` and the checkpoint's ``spec``).

    Example:
        >>> task = create_task(cfg, store=Store("plankton.h5"))  # doctest: +SKIP
        >>> model = task.build_model()  # doctest: +SKIP
    """
    cls = get_task(config.task)
    counts = None
    if store is not None:
        from taxotrain.data.dataset import train_class_counts
        from taxotrain.stages import expand_stages

        cls.check_store(store)
        if spec is None:
            spec = cls.spec_from_store(config, store, stages or expand_stages(config))
            if "metadata" in {f.name for f in fields(spec)} and getattr(spec, "metadata", None) is None:
                spec = replace(spec, metadata=cls.metadata_spec_for(config, store))  # type: ignore[call-arg]
        taxonomy = taxonomy or store.taxonomy
        counts = train_class_counts(store, config.data.hide_labels, config.run.seed)
    if taxonomy is None or spec is None:
        raise ValueError("create_task needs a store, or a taxonomy and a spec")
    if not isinstance(spec, cls.spec_type):
        raise ConfigError(f"task: {config.task} takes a {cls.spec_type.__name__}, got a {type(spec).__name__}; the "
                          "checkpoint was written for another task")
    return cls(config, taxonomy, spec, counts)
