"""Models fitted in closed form (the ROCKET family): one pass over the train split instead of gradient epochs.

``fit`` runs them through the same Lightning loop as networks, with one epoch whose training is the closed-form fit:
the backbone's transform and scaler are fitted on the train series (with ``data.fit_on: train+val``, the val series
too), a ridge classifier per rank on their features (``models/ridge.py``), and the epoch's validation,
``metrics.csv``, checkpoints, loggers, early stopping and the tuning reporter all work as for any run. Optimiser,
loss, mixing and augmentation settings are not used.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch

from taxotrain.config import Config, ConfigError, candidate_names
from taxotrain.run import CKPT_KEY
from taxotrain.training.module import TaskModule

__all__ = ["ClosedFormModule", "check_closed_form_config"]


def check_closed_form_config(cfg: Config) -> None:
    """Refuse the settings that need gradient training, in one line naming the key."""
    name = cfg.model.backbone
    refused = {"model.head": (cfg.model.head != "linear", "its head is a ridge classifier per rank (model.head: "
                              "linear)"),
               "trainer.ema": (cfg.trainer.ema, "there are no gradient steps to average"),
               "trainer.calibrate": (cfg.trainer.calibrate, "its ridge heads fit their temperature on leave-one-out "
                                     "scores already"),
               "loss.weighting": (cfg.loss.weighting == "gradnorm", "GradNorm weighs gradients"),
               "mix.mixup_alpha": (cfg.mix.mixup_alpha > 0, "mixing applies to gradient training"),
               "data.sampler": (cfg.data.sampler != "shuffle", "the fit sees every train record once"),
               "loss.class_weights": (cfg.loss.class_weights != "none", "the ridge has no loss to weigh"),
               "loss.logit_adjustment": (cfg.loss.logit_adjustment == "train", "the ridge has no loss to adjust "
                                         "(loss.logit_adjustment: predict works)"),
               "mix.cutmix_alpha": (cfg.mix.cutmix_alpha > 0, "mixing applies to gradient training"),
               "model.drop_rate": (cfg.model.drop_rate > 0, "dropout applies to gradient training"),
               "trainer.compile": (cfg.trainer.compile, "its transform is aeon's (numba), not a torch graph")}
    for key, (bad, why) in refused.items():
        if bad:
            raise ConfigError(f"'{key}' does nothing for model.backbone={name}, which is fitted in closed form: "
                              f"{why}. Remove it (or use a network)")


def _is_fitted(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or every member of a ``mean``) has been fitted."""
    members = getattr(model, "members", None)
    if members is not None:
        return all(_is_fitted(m) for m in members)
    return bool(getattr(model.backbone, "fitted", False))


class ClosedFormModule(TaskModule):
    """A :class:`TaskModule` whose first epoch fits the model in closed form instead of stepping an optimiser."""

    # one epoch of one (skipped) batch, so that Lightning validates, checkpoints and logs the fitted model
    # (and in float32: bf16 autocast on a GPU would round the ridge heads' inputs and flip predictions)
    # one process: the transform and the ridge see the whole train split at once, so there is nothing to shard
    trainer_overrides: ClassVar[dict[str, Any]] = {"max_epochs": 1, "limit_train_batches": 1,
                                                   "gradient_clip_val": None, "precision": "32-true",
                                                   "devices": 1, "num_nodes": 1, "strategy": "auto"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fit_summary: dict[str, Any] = {}

    def on_train_epoch_start(self) -> None:
        if _is_fitted(self.model):  # resumed after the fit: nothing left to fit
            return
        t0 = time.time()
        # the train split (and val with data.fit_on: train+val) as validation sees it: standardised, not augmented
        x, targets = self.task.closed_form_records(self.trainer.datamodule.store)
        fitted = {rank: {k: v for k, v in f.items() if k != "loo_probs"}  # plain values for the checkpoint
                  for rank, f in self.task.fit_closed_form(self.model, x, targets).items()}
        self.loo_loss = float(np.nansum([f["loo_loss"] for f in fitted.values()]))
        self.fit_summary = {"seconds": round(time.time() - t0, 2), "records": len(x), "fit_on": self.config.data.fit_on,
                            "features": int(self.model.num_features), "ranks": fitted}
        members = getattr(self.model, "members", None)
        what = (f"the mean of {len(members)} models ({', '.join(candidate_names(self.config))})" if members is not None
                else self.config.model.backbone)
        print(f"fitted {what} in {self.fit_summary['seconds']:.1f} s on {len(x)} {self.config.data.fit_on} records "
              f"({self.model.num_features:,} features); per rank: " + "; ".join(
                  (f"{rank} alpha {f['alpha']:.3g}, " if members is None else f"{rank} ")
                  + f"leave-one-out top-1 {f['loo_top1']:.3f}" for rank, f in fitted.items()), flush=True)
        if self.config.data.fit_on == "train+val":
            print(f"data.fit_on: train+val: the fit saw the {len(self.trainer.datamodule.store.splits['val'])} val "
                  "records, so the val figures are in-sample; the leave-one-out top-1 above is the honest estimate",
                  flush=True)

    @property
    def train_loss_mean(self) -> float:
        """The leave-one-out log loss of the ridge heads on the train split (summed over ranks)."""
        return getattr(self, "loo_loss", float("nan"))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        return None  # the epoch's training was the fit (its one batch is skipped); validation follows

    def configure_optimizers(self) -> None:  # type: ignore[override]
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.fit_summary:
            checkpoint[CKPT_KEY]["closed_form"] = self.fit_summary
