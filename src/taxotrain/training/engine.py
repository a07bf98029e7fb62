"""``taxotrain fit``: build data, model, loss and the Lightning Trainer from a config, and train into a run folder."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging

from taxotrain.config import MEAN, Config, ConfigError, config_to_dict, save_config
from taxotrain.data.store import Store
from taxotrain.run import CKPT_KEY, RunError, RunPaths, read_checkpoint, torch_threads
from taxotrain.stages import expand_stages, is_progressive, max_drop_path
from taxotrain.tasks import create_task
from taxotrain.training.callbacks import AtomicCheckpointIO, EpochCSV, RNGState, RunCheckpoint
from taxotrain.training.closed_form import ClosedFormModule, check_closed_form_config
from taxotrain.training.datamodule import TaskDataModule
from taxotrain.training.interrupt import FitInterrupted, GracefulInterrupt
from taxotrain.training.module import TaskModule
from taxotrain.training.progress import PlainProgress, TrainProgressBar
from taxotrain.training.progressive import StageRegularization
from taxotrain.training.select import AUTO, chosen_before, select_backbone


@dataclass
class FitResult:
    """Where a fit left its checkpoints and how good the best one was."""

    run_dir: Path
    best_checkpoint: Path
    monitor: str
    best_score: float | None
    epochs: int
    seconds: float
    process: int = 0  # the global rank of the process that returns it: a DDP run returns in every process


def resolve_precision(cfg: Config) -> str:
    """``auto`` = bf16 (or fp16) mixed precision on a CUDA GPU, full fp32 elsewhere."""
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


# what may differ between a run and its resume: where it lives and runs, how it logs; everything else shapes it
RESUME_MAY_CHANGE = ("run.dir", "run.name", "data.store", "data.num_workers", "trainer.accelerator",
                     "trainer.devices", "trainer.strategy", "trainer.num_nodes", "trainer.sync_batchnorm",
                     "trainer.precision", "trainer.calibrate", "trainer.cpu_threads",
                     "trainer.progress", "trainer.log_every_n_steps", "trainer.compile", "trainer.compile_backend",
                     "trainer.early_stopping_patience", "logging.", "tune.", "prepare.")


def resume_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose value in ``now`` differs from the ``saved`` config of a run and that shape the run (data,
    model, optimiser, loss, schedule, seed): what a resume must not change."""
    out = []
    for key, value in now.items():
        dotted = f"{prefix}{key}"
        if dotted.startswith(RESUME_MAY_CHANGE):
            continue
        before = saved.get(key) if isinstance(saved, dict) else None
        if isinstance(value, dict) and isinstance(before, dict):
            out += resume_changes(before, value, f"{dotted}.")
        elif before != value:
            out.append(dotted)
    return out


def resolve_resume(paths: RunPaths, resume: str | None, cfg: Config) -> tuple[str | None, dict[str, Any]]:
    """Checkpoint to continue from (``None`` for a fresh run) and its taxotrain metadata. Refuses to overwrite a run
    that exists, a file that is not a taxotrain checkpoint, and a resume that changes what shapes the run."""
    if resume is None:
        if paths.last.is_file() or paths.best.is_file():
            raise RunError(f"run folder {paths.root} already holds a run; continue it with --resume auto or choose "
                           "another run.dir=...")
        return None, {}
    if resume == "auto":
        if not paths.last.is_file():
            return None, {}  # nothing to resume yet: start fresh (what a restarted job script wants)
        ckpt = str(paths.last)
    else:
        ckpt = resume
        if not Path(ckpt).is_file():
            raise RunError(f"--resume {ckpt}: no such checkpoint; use --resume auto or a .ckpt path")
    info = read_checkpoint(Path(ckpt))[CKPT_KEY]
    changed = resume_changes(info["config"], config_to_dict(cfg))
    if changed:
        shown = "; ".join(f"{k} is {_at(config_to_dict(cfg), k)!r}, trained with {_at(info['config'], k)!r}"
                          for k in changed[:5])
        raise RunError(f"--resume {ckpt}: {shown}; a resumed run keeps what shapes it (data, model, optim, loss, "
                       "schedule, seed): resume with the run's own config.yaml, or start a new run.dir")
    return ckpt, info


def _at(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None  # type: ignore[assignment]
    return tree


def _forget_cached_mlflow_stores() -> None:
    """MLflow keeps one store per URI for the life of the process. When a run folder is new (e.g. a demo folder
    deleted and rewritten in the same process) the cached store would point at files that are gone."""
    try:
        from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

        TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError):  # private API: newer MLflow may cache differently
        pass


def build_loggers(cfg: Config, paths: RunPaths, resuming: bool) -> list[Any]:
    """TensorBoard and MLflow (local file store in the run folder) loggers, plus optional W&B/Comet."""
    from lightning.pytorch import loggers as pl_loggers

    name = cfg.run.name or paths.root.name
    out: list[Any] = []
    if cfg.logging.tensorboard:
        out.append(pl_loggers.TensorBoardLogger(save_dir=str(paths.root), name="tensorboard", version=""))
    if cfg.logging.mlflow:
        run_id = paths.mlflow_run_id.read_text().strip() if resuming and paths.mlflow_run_id.is_file() else None
        uri = cfg.logging.mlflow_uri or (paths.root.resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps its file store behind an opt-in; it is the no-server option
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            if not (paths.root.resolve() / "mlruns").exists():
                _forget_cached_mlflow_stores()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logger = pl_loggers.MLFlowLogger(experiment_name="taxotrain", run_name=name, tracking_uri=uri,
                                             run_id=run_id)
            if process_rank() == 0:  # the other processes of a DDP run log nothing (Lightning's rank-zero rule)
                paths.mlflow_run_id.write_text(logger.run_id)
        out.append(logger)
    if cfg.logging.wandb:
        out.append(pl_loggers.WandbLogger(name=name, save_dir=str(paths.root)))
    if cfg.logging.comet:
        out.append(pl_loggers.CometLogger(experiment_name=name))
    return out


def process_rank() -> int:
    """This process's global rank in a DDP run, known before the Trainer exists (from the environment that
    Lightning's launcher, torchrun or SLURM sets); 0 in a single-process run."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _say(*args: Any) -> None:
    """Print from process 0 only: a DDP run says each thing once."""
    if process_rank() == 0:
        print(*args, flush=True)


def _progress_mode(cfg: Config) -> str:
    mode = cfg.trainer.progress
    if mode == "auto":
        return "rich" if sys.stdout.isatty() else "plain"
    return mode


def fit(cfg: Config, resume: str | None = None, callbacks: list[L.Callback] | None = None) -> FitResult:
    """Train the model that ``cfg`` describes into ``cfg.run.dir``.

    ``resume`` is ``None`` (a new run; refuses a folder that already holds one), ``"auto"`` (continue from
    ``checkpoints/last.ckpt`` if there is one) or a checkpoint path. ``callbacks`` are extra Lightning callbacks.
    """
    if not cfg.data.store:
        raise ConfigError("data.store is not set; give the store from `taxotrain prepare`, e.g. data.store=plankton.h5")
    paths = RunPaths(Path(cfg.run.dir))
    cfg = chosen_before(cfg, paths) if resume else cfg
    ckpt_path, resumed = resolve_resume(paths, resume, cfg)
    store = Store(cfg.data.store)
    if resumed.get("store_fingerprint") and resumed["store_fingerprint"] != store.fingerprint:
        raise RunError(f"--resume: {store.path} is not the store the run was trained on (its content or split "
                       f"differs from {resumed.get('store')}); resume with that store, or start a new run.dir")
    if len(store.splits["val"]) == 0:
        raise ConfigError(f"{store.path} has an empty val split; re-run prepare with --val above 0")
    world = (cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1) * cfg.trainer.num_nodes
    if len(store.splits["val"]) < world:  # a process with no val record would wait for the others forever
        raise ConfigError(f"{store.path} has {len(store.splits['val'])} val record(s) for {world} processes; "
                          "give every process one: re-run prepare with a larger --val, or use fewer devices")
    if cfg.model.backbone in (AUTO, MEAN):
        check_closed_form_config(cfg)  # before fitting every candidate, not after
    if cfg.model.backbone == AUTO:
        with torch_threads(cfg.trainer.cpu_threads):
            cfg = select_backbone(cfg, store, paths)
    on_cpu = cfg.trainer.accelerator == "cpu" or (cfg.trainer.accelerator == "auto" and not torch.cuda.is_available())
    if cfg.trainer.sync_batchnorm and on_cpu:
        raise ConfigError("trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm does not run on the CPU); "
                          "remove it, or raise data.batch_size per process instead")
    stages = expand_stages(cfg)
    task = create_task(cfg, store=store, stages=stages)
    task.check_config()
    monitor = task.monitor()

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)`? is deprecated.*")
    warnings.filterwarnings("ignore", message=".*configure_optimizers` returned `None`.*")  # closed-form fits
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    # built with the largest drop-path of any stage; StageRegularization scales it per stage
    model = task.build_model(drop_path_rate=max_drop_path(stages))
    closed_form = task.fits_in_closed_form(model)
    if closed_form:
        check_closed_form_config(cfg)
    elif cfg.data.fit_on != "train":
        raise ConfigError(f"'data.fit_on: {cfg.data.fit_on}' is for models fitted in closed form (the ROCKET family, "
                          f"mean, auto); {cfg.model.backbone} trains by gradient and picks its checkpoint on val. "
                          "Remove it")
    dm = TaskDataModule(task, store, stages, closed_form=closed_form)
    module = (ClosedFormModule if closed_form else TaskModule)(
        task, model, stages, monitor=monitor,
        store={"store": str(store.path.resolve()), "store_fingerprint": store.fingerprint})
    if cfg.trainer.compile:
        model.compile(backend=cfg.trainer.compile_backend)  # in place: parameter names and checkpoints unchanged

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0:
        save_config(cfg, paths.config)
    checkpoint = RunCheckpoint(dirpath=paths.checkpoints, filename="best", monitor=monitor,
                               mode=cfg.trainer.monitor_mode, save_top_k=1, save_last=False,
                               auto_insert_metric_name=False, enable_version_counter=False)
    # last.ckpt by its own callback: Lightning >= 2.6 refreshes `save_last` only in epochs that also wrote a new
    # best, so a run whose last epochs did not improve would resume from a stale epoch
    last = RunCheckpoint(dirpath=paths.checkpoints, filename="last", monitor=None, save_top_k=1,
                         enable_version_counter=False)

    def stage_columns(trainer: L.Trainer) -> dict[str, Any]:
        stage = dm.current_stage()
        return {**task.epoch_columns(stage), "batch_size": dm.stage_batch_size(stage)}

    all_callbacks: list[L.Callback] = [EpochCSV(paths.metrics_csv, stage_columns), StageRegularization(stages),
                                       RNGState(), *(callbacks or []), checkpoint, last, GracefulInterrupt(paths.last)]
    if cfg.trainer.ema:
        all_callbacks.insert(0, EMAWeightAveraging(decay=cfg.trainer.ema_decay))
    if cfg.trainer.early_stopping_patience is not None:
        all_callbacks.append(EarlyStopping(monitor=monitor, mode=cfg.trainer.monitor_mode,
                                       patience=cfg.trainer.early_stopping_patience))
    progress = _progress_mode(cfg)
    if progress == "rich":
        all_callbacks.append(TrainProgressBar())
    elif progress == "plain":
        all_callbacks.append(PlainProgress(cfg.trainer.log_every_n_steps))

    trainer = L.Trainer(**{
        "default_root_dir": str(paths.root), "max_epochs": cfg.trainer.max_epochs,
        "accelerator": cfg.trainer.accelerator, "devices": cfg.trainer.devices, "precision": resolve_precision(cfg),
        "gradient_clip_val": cfg.trainer.gradient_clip_val, "callbacks": all_callbacks,
        "logger": build_loggers(cfg, paths, ckpt_path is not None) or False,
        "log_every_n_steps": cfg.trainer.log_every_n_steps, "enable_progress_bar": progress == "rich",
        "enable_model_summary": False, "num_sanity_val_steps": 0,
        "limit_train_batches": cfg.trainer.limit_train_batches, "limit_val_batches": cfg.trainer.limit_val_batches,
        "strategy": cfg.trainer.strategy, "num_nodes": cfg.trainer.num_nodes,
        "sync_batchnorm": cfg.trainer.sync_batchnorm,
        "use_distributed_sampler": False,  # the data module's samplers shard themselves (resume-exact, seeded)
        "plugins": [AtomicCheckpointIO()],
        "reload_dataloaders_every_n_epochs": 1 if len(stages) > 1 else 0, **module.trainer_overrides,
    })
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    size = (f"closed form, {model.num_features:,} features" if closed_form else f"{n_params:.1f}M params")
    _say(f"fit {cfg.model.backbone} ({size}; {task.describe_input()}) on {store.path.name}: "
          f"{len(store.splits['train'])} train / {len(store.splits['val'])} val records; " + ", ".join(
              f"{n} {r}" for r, n in zip(task.taxonomy.ranks, task.taxonomy.num_classes, strict=True))
          + f"; run folder {paths.root}" + (f"; resuming from {ckpt_path}" if ckpt_path else ""))
    if is_progressive(cfg):
        _say("progressive stages: " + "; ".join(
            f"epochs {s.start + 1}-{s.end} at {s.image_size}px, batch {s.batch_size}, lr x{s.lr_scale:.2f}, "
            f"magnitude {s.magnitude}, mixup {s.mixup_alpha:.2f}, dropout {s.drop_rate:.2f}, "
            f"drop-path {s.drop_path_rate:.2f}" for s in stages))
    t0 = time.time()
    with torch_threads(cfg.trainer.cpu_threads):
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except FitInterrupted as exc:
            if process_rank() == 0:
                print(f"taxotrain fit: {exc}; saved {paths.last}. Resume with: taxotrain fit --resume auto "
                      f"run.dir={shlex.quote(str(paths.root))}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt from exc
    if cfg.trainer.calibrate and trainer.is_global_zero:  # one process rewrites the checkpoints
        from taxotrain.training.calibration import calibrate_run

        print(calibrate_run(paths.root, store=store.path, batch_size=cfg.data.batch_size * 2,
                            threads=cfg.trainer.cpu_threads).summary(), flush=True)
    score = checkpoint.best_model_score
    return FitResult(paths.root, paths.best, monitor, float(score) if score is not None else None,
                     trainer.current_epoch, time.time() - t0, trainer.global_rank)
