"""The run configuration: a pydantic schema, read from YAML and patched with dotted ``key=value`` overrides.

Precedence is schema defaults <- YAML file <- ``--params`` file <- command-line overrides. The resolved config is
validated once, here, and every error is turned into one line that names the key and what it accepts.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taxotrain.errors import TaxotrainError


class ConfigError(TaxotrainError):
    """A config problem that the user can fix; the message is a single line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    dir: str = Field("runs/default", description="run folder: config, checkpoints, metrics and reports go here")
    seed: int = Field(0, description="seed for weights, shuffling, augmentation and DataLoader workers")
    name: str | None = Field(None, description="name shown in MLflow/TensorBoard; defaults to the run folder's name")


class AugmentConfig(_Section):
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.5, ge=0, le=1, description="probability of a vertical flip")
    rot90: bool = Field(True, description="rotate by a random multiple of 90 degrees (orientation-free organisms)")
    rotate_degrees: float = Field(0.0, ge=0, le=180, description="extra random rotation in +-degrees (0 = off)")
    policy: Literal["none", "randaugment", "trivialaugment"] = Field(
        "none", description="automatic augmentation policy from torchvision"
    )
    magnitude: int = Field(9, ge=0, le=30, description="RandAugment magnitude (0-30)")
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing (after normalising)")


class SignalAugmentConfig(_Section):
    time_warp: float = Field(0.2, ge=0, lt=1, description="signals: random squish/stretch of the time axis by up to "
                             "this fraction (0.2 = 0-20%, Capfinder's range), applied online; 0 = off")
    time_warp_prob: float = Field(0.5, ge=0, le=1, description="signals: probability that a series is time-warped")
    jitter: float = Field(0.0, ge=0, description="signals: std of added Gaussian noise, in units of the (normalised) "
                          "signal; 0 = off")
    scaling: float = Field(0.0, ge=0, description="signals: std of a random per-series amplitude factor around 1; "
                           "0 = off")


class PrepareConfig(_Section):
    target_length: int | None = Field(
        None, ge=1, description="signals: truncate (keep the start) or zero-pad (at the end) every series to this "
        "length; null = the longest series")
    examples_per_class: int | Literal["all"] | None = Field(
        "all", description="signals: keep at most this many series per class (seeded downsampling of the non-test "
        "records); null = the size of the smallest class (balanced); all = keep everything")
    znorm: bool = Field(False, description="signals: z-normalise each series on its own (mean 0, std 1) before padding")
    val: float = Field(0.1, ge=0, lt=1, description="validation fraction (taken from TRAIN when there is an official "
                       "test split)")
    test: float = Field(0.1, ge=0, lt=1, description="test fraction when the source has no official test split")
    seed: int = Field(0, description="seed of the split and of the downsampling")


class DataConfig(_Section):
    store: str | None = Field(None, description="HDF5 store written by `taxotrain prepare` (required for fit)")
    image_size: int = Field(64, ge=8, le=2048, description="side of the square network input, in pixels")
    channels: Literal["auto", 1, 3] = Field(
        "auto", description="input channels: auto = 1 when every image in the store is greyscale, else 3"
    )
    pad_fill: Literal["edge", "mean", "zero"] = Field(
        "edge",
        description="how the padding to square is filled: edge = repeat border pixels, mean = dataset mean, "
        "zero = black",
    )
    batch_size: int = Field(64, ge=1, description="training batch size (evaluation uses twice this)")
    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto = number of CPU cores, at most 8"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    signal_augment: SignalAugmentConfig = Field(default_factory=SignalAugmentConfig)
    hide_labels: dict[str, float] | None = Field(
        None, description="simulate partial identifications: hide this fraction of train labels at a rank (and "
        "finer), e.g. {class: 0.3}; seeded by run.seed"
    )
    sampler: Literal["shuffle", "balanced", "sqrt"] = Field(
        "shuffle", description="how each training epoch draws its records: shuffle (every record once), balanced (with "
        "replacement, every class of data.sampler_rank equally often) or sqrt (class frequency proportional to the "
        "square root of its count); an epoch keeps the train split's length"
    )
    sampler_rank: str | None = Field(
        None, description="the rank data.sampler balances (null = the finest); records unknown there are one group"
    )
    fit_on: Literal["train", "train+val"] = Field(
        "train", description="models fitted in closed form (the ROCKET family, mean, auto): fit on the train split, "
        "or on train+val (more records; their ridge picks its penalty and temperature by leave-one-out, so val is "
        "not needed, and val figures become in-sample). Networks always train on train and pick checkpoints on val"
    )

    @field_validator("num_workers")
    @classmethod
    def _non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return v


METADATA_COMPONENTS = ("place", "date", "hour", "elevation")  # the metadata inputs that have an encoder


class MetadataMaskingConfig(_Section):
    start: float = Field(1.0, ge=0, le=1, description="probability of hiding all of a record's metadata at the first "
                         "training step (Linnaeus' schedule; falls linearly to end)")
    end: float = Field(0.05, ge=0, le=1, description="probability of hiding all of a record's metadata from "
                       "model.metadata_masking.fraction of the training on")
    fraction: float = Field(0.3, ge=0, le=1, description="fraction of the training steps over which the probability "
                            "falls from start to end")
    partial: float = Field(0.1, ge=0, le=1, description="probability of hiding each component alone in a record that "
                           "keeps its metadata")


class ModelConfig(_Section):
    backbone: str = Field("resnet18", description="any timm model name for images, e.g. resnet18, convnext_tiny; for "
                          "task: signal a network (cnn_lstm, attention_cnn_lstm, resnet1d, inception_time, encoder), "
                          "a ROCKET-family model fitted in closed form (minirocket, multirocket, hydra, "
                          "multirocket_hydra), mean: the mean of the probabilities of model.candidates, or auto: the "
                          "best of mean and each candidate on the train (leave-one-out) and val splits")
    candidates: list[str] | None = Field(
        None, description="the closed-form models of model.backbone: mean and auto; null = the task's own list "
        "(signals: multirocket_hydra, multirocket, minirocket, hydra)")
    kwargs: dict[str, Any] | None = Field(
        None, description="keyword arguments of the backbone: of the signal network (task: signal, e.g. {width: 32}) "
        "or of timm.create_model (image tasks, e.g. {global_pool: max}); null = its defaults")
    pretrained: bool = Field(False, description="image tasks: load pretrained weights from the Hugging Face hub (or "
                             "pretrained_path)")
    pretrained_path: str | None = Field(
        None, description="image tasks: local weights file for the backbone (.safetensors/.pth), loaded whenever set"
    )
    head: Literal["linear", "conditional", "hierarchical_softmax", "flat"] = Field(
        "linear", description="classifier head: linear per rank, conditional (finer sees coarser), "
        "hierarchical_softmax, or flat (finest only; coarser ranks = summed finest probabilities)"
    )
    head_condition: Literal["soft", "hard"] = Field(
        "soft", description="conditional head: feed the coarser softmax (soft) or its one-hot argmax (hard)"
    )
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout before the heads")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth, for backbones that support it")
    embed_dim: int | None = Field(
        None, ge=2, description="task: embedding: width of the embedding, a linear projection of the backbone's "
        "pooled features (then L2-normalised); null = the backbone's own width, no projection")
    metadata: list[Literal["place", "date", "hour", "elevation"]] = Field(
        default_factory=list, description="place/date metadata inputs (docs/metadata.md), e.g. [place, date]: encoded "
        "and fused with the pooled image or signal features before the heads; [] = off. task: prior: the components "
        "it learns from ([] = every one the store has)")
    metadata_fusion: Literal["concat", "film"] = Field(
        "concat", description="how the metadata embedding joins the pooled features: concat (side by side) or film "
        "(scales and shifts each feature, starting as the identity)")
    metadata_dim: int = Field(64, ge=1, description="width of the metadata embedding (the encoder MLP's output)")
    metadata_hidden: int = Field(256, ge=1, description="hidden width of the metadata encoder's MLP (and of task: "
                                 "prior's residual blocks)")
    metadata_depth: int = Field(2, ge=1, description="linear layers of the metadata encoder's MLP")
    metadata_masking: MetadataMaskingConfig = Field(default_factory=MetadataMaskingConfig)
    prior_blocks: int = Field(2, ge=0, description="task: prior: residual blocks (two linear layers each, "
                              "model.metadata_hidden wide) between the metadata encoder and the heads, as in SINR")

    @field_validator("metadata")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("name each component once, e.g. [place, date]")
        return v


class OptimConfig(_Section):
    name: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay (not applied to norms and biases)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov)")
    schedule: Literal["cosine", "constant", "plateau", "cyclic", "sgdr"] = Field(
        "cosine", description="LR schedule: cosine or constant after warmup (per batch); plateau = reduce on plateau "
        "of the monitored val metric; cyclic = triangular2 cyclic LR; sgdr = cosine with warm restarts (no warmup for "
        "the last three)")
    warmup_epochs: float = Field(
        1.8, ge=0, description="linear warmup length in epochs (fractions allowed); 1.8 = 30% of a 6-epoch run, as "
        "one-cycle")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="lowest LR of cosine/cyclic/sgdr (and the floor of "
                                "plateau), as a fraction of lr")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: multiply the LR by this when the monitored "
                                  "metric stalls")
    plateau_patience: int = Field(5, ge=0, description="plateau: epochs without improvement before the LR is cut")
    cycle_epochs: float = Field(4.0, gt=0, description="cyclic: epochs of one half cycle (step_size_up); sgdr: epochs "
                                "of the first cycle (T_0)")
    cycle_mult: int = Field(2, ge=1, description="sgdr: each cycle is this many times longer than the one before "
                            "(T_mult)")
    centre_lr_scale: float = Field(
        10.0, gt=0, description="task: embedding: learning-rate multiplier of the margin heads' class centres, which "
        "get their own optimizer group (UNICOM's lr_pfc_weight, 10)")


class LossConfig(_Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of each rank's cross-entropy")
    smoothing: Literal["uniform", "taxonomic"] = Field(
        "uniform", description="where smoothing mass goes: all classes alike, or relatives by closeness in the tree"
    )
    smoothing_decay: float = Field(
        1.0, ge=0, description="taxonomic smoothing: a class's share falls by exp(-decay) per edge of tree distance"
    )
    rank_weights: dict[str, float] | None = Field(
        None, description="weight per rank name in the summed loss, e.g. {group: 0.5}; overrides coarse_weight"
    )
    coarse_weight: float = Field(
        0.25, ge=0, description="weight of every rank coarser than the finest in the summed loss (the finest weighs "
        "1); 0.25 measured best on plankton, 1 = plain sum, 0 = finest rank only")
    class_weights: Literal["none", "inverse", "sqrt_inverse"] = Field(
        "none", description="weight each record's loss at a rank by the inverse (or inverse square root) of its "
        "class's train count, normalised to a mean of 1 over the train records and capped at loss.class_weight_cap"
    )
    class_weight_cap: float = Field(10.0, ge=1, description="largest class weight (Linnaeus's capping): a class of 3 "
                                    "images is not worth 500 of a common one")
    logit_adjustment: Literal["none", "train", "predict"] = Field(
        "none", description="logit adjustment for the class prior (Menon et al. 2021): train = the loss sees logits + "
        "tau * log(train prior); predict = evaluate/predict/export subtract tau * log(train prior) from the logits"
    )
    logit_adjustment_tau: float = Field(1.0, gt=0, description="tau of loss.logit_adjustment")
    weighting: Literal["static", "gradnorm"] = Field(
        "static", description="rank weights: fixed (rank_weights) or learnt by GradNorm (Chen et al. 2018)"
    )
    gradnorm_alpha: float = Field(1.5, ge=0, description="GradNorm asymmetry: higher pulls slow ranks harder")
    gradnorm_lr: float = Field(0.025, gt=0, description="GradNorm learning rate of the rank weights")
    margin: Literal["arcface", "cosface", "combined", "subcenter_arcface"] = Field(
        "arcface", description="task: embedding: the margin loss of every rank: arcface (angle margin m2), cosface "
        "(cosine margin m3), combined (cos(m1 theta + m2) - m3) or subcenter_arcface (arcface on the nearest of "
        "loss.sub_centers centres per class); docs/embeddings.md")
    scale: float = Field(64.0, gt=0, description="task: embedding: the scale s of the margin logits s cos(theta) "
                         "(64 as in ArcFace and insightface)")
    m1: float | None = Field(None, gt=0, description="task: embedding, loss.margin combined: angle multiplier m1 "
                             "(null = 1)")
    m2: float | None = Field(
        None, ge=0, lt=math.pi, description="task: embedding: additive angle margin m2 in RADIANS (0.5 = 28.6 degrees; "
        "pytorch-metric-learning's ArcFaceLoss takes degrees) of arcface, subcenter_arcface and combined (null = 0.5)")
    m3: float | None = Field(
        None, ge=0, description="task: embedding: additive cosine margin m3 of cosface (null = 0.35) and combined "
        "(null = 0)")
    sub_centers: int | None = Field(None, ge=1, description="task: embedding, loss.margin subcenter_arcface: centres "
                                    "per class (null = 3)")
    sample_rate: float = Field(
        1.0, gt=0, le=1, description="task: embedding: fraction of the class centres scored at each training step "
        "(every positive plus random others, PartialFC); 1 = all")
    prior_background: float = Field(
        0.0, ge=0, description="task: prior: presence-only training (SINR's 'assume negative' loss): every class is "
        "pushed towards absence at one random background point per record (uniform on the sphere, uniform day of "
        "year), with this weight (1 = SINR's); the observed class is pushed towards presence. 0 = off (per-rank "
        "cross-entropy among the records)")

    @model_validator(mode="after")
    def _margin_settings(self) -> LossConfig:
        """A margin setting the chosen ``loss.margin`` does not take is an error, not a no-op."""
        takes = {"arcface": ("m2",), "cosface": ("m3",), "combined": ("m1", "m2", "m3"),
                 "subcenter_arcface": ("m2", "sub_centers")}[self.margin]
        for key, used_by in (("m1", "combined"), ("m2", "arcface, subcenter_arcface and combined"),
                             ("m3", "cosface and combined"), ("sub_centers", "subcenter_arcface")):
            if getattr(self, key) is not None and key not in takes:
                raise ValueError(f"loss.{key} is a setting of loss.margin {used_by}, not of {self.margin} (which "
                                 f"takes {', '.join('loss.' + t for t in takes)}); remove it or change loss.margin")
        return self


class MixConfig(_Section):
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="cutmix Beta(alpha, alpha); 0 = off (both on: 50/50 per batch)")
    prob: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    within: str | None = Field(
        None, description="mix only images that share a node at this rank (e.g. genus); null = mix across all"
    )


LIGHTNING_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
                        "transformer-engine-float16", "32", "16", "bf16", "64")


class TrainerConfig(_Section):
    max_epochs: int = Field(30, ge=1, description="number of training epochs")
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu, mps")
    devices: int | str = Field("auto", description="devices (processes) per machine: 2 with strategy ddp trains 2 "
                               "processes, on GPUs (NCCL) or on the CPU (gloo); data.batch_size is per process")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ddp_find_unused_parameters_true, ...; "
                          "launch recipes for torchrun and SLURM in docs/training.md#more-than-one-process")
    num_nodes: int = Field(1, ge=1, description="machines taking part in a DDP run (torchrun or SLURM sets the rest)")
    sync_batchnorm: bool = Field(False, description="batch-norm statistics over every process's batch under DDP "
                                 "(helps when the batch per process is small)")
    precision: str = Field("auto", description="auto = bf16/16 mixed precision on GPU, 32 on CPU; or a Lightning "
                           "value: " + ", ".join(LIGHTNING_PRECISIONS))
    calibrate: bool = Field(False, description="after training, fit one softmax temperature per rank on the val split "
                            "so that confidences (and roll-up thresholds) mean what they say; evaluate, predict and "
                            "export use it. `taxotrain calibrate RUN` does the same for a finished run")
    ema: bool = Field(False, description="keep an exponential moving average of the weights; val, checkpoints and "
                      "predictions use it")
    ema_decay: float = Field(0.998, gt=0, lt=1, description="EMA decay per step (0.998 ~ averages the last 500 steps)")
    channels_last: bool = Field(True, description="channels_last memory format: faster convolutions on CPU and GPU")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch threads for CPU work; null = torch's default (one per core). 1 is fastest for "
        "small models on a CPU that other jobs share")
    gradient_clip_val: float | None = Field(1.0, description="clip the gradient norm to this value (null = off)")
    monitor: str = Field("auto", description="val metric that picks best.ckpt, e.g. val/group/top1; auto = finest top1")
    monitor_mode: Literal["max", "min"] = Field("max", description="whether a larger monitored value is better")
    early_stopping_patience: int | None = Field(
        10, description="epochs without improvement before stopping (null = off); best weights are kept"
    )
    limit_train_batches: float | int = Field(1.0, description="fraction or number of train batches per epoch")
    limit_val_batches: float | int = Field(1.0, description="fraction or number of val batches per epoch")
    log_every_n_steps: int = Field(50, ge=1, description="how often step metrics reach the loggers")
    compile: bool = Field(False, description="torch.compile the model (mostly pays on GPU; the first steps are slow)")
    compile_backend: str = Field("inductor", description="torch.compile backend, e.g. inductor, cudagraphs, eager")
    progress: Literal["auto", "rich", "plain", "none"] = Field(
        "auto", description="progress display: auto = rich bar on a terminal, plain log lines otherwise"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _lightning_precision(cls, v: Any) -> str:
        v = str(v)
        if v != "auto" and v not in LIGHTNING_PRECISIONS:
            raise ValueError(f"allowed: auto, {', '.join(LIGHTNING_PRECISIONS)}")
        return v


class StageConfig(_Section):
    epochs: int | None = Field(None, ge=1, description="stage length in epochs (give this or fraction)")
    fraction: float | None = Field(None, gt=0, le=1, description="stage length as a fraction of trainer.max_epochs")
    image_size: int | None = Field(None, ge=8, le=2048, description="training image size (null = data.image_size)")
    batch_size: int | Literal["auto"] | None = Field(
        None, description="training batch size; auto = largest power of two that fits (probed on GPU); "
        "null = data.batch_size")
    lr_scale: float = Field(1.0, gt=0, description="multiplies the scheduled learning rate during this stage")
    magnitude: int | None = Field(
        None, ge=0, le=30, description="RandAugment magnitude (null = data.augment.magnitude)")
    mixup_alpha: float | None = Field(None, ge=0, description="mixup alpha (null = mix.mixup_alpha)")
    drop_rate: float | None = Field(None, ge=0, lt=1, description="dropout before the heads (null = model.drop_rate)")
    drop_path_rate: float | None = Field(
        None, ge=0, lt=1, description="stochastic depth (null = model.drop_path_rate)")


class ProgressiveConfig(_Section):
    stages: list[StageConfig] | None = Field(
        None, description="explicit stages, e.g. [{epochs: 2, image_size: 32, batch_size: 128}, {epochs: 4}]; "
        "stages given in epochs that fall short of trainer.max_epochs are extended by the last one")
    start_size: int | None = Field(
        None, ge=8, le=2048, description="compact form: first stage's image size; setting it turns progressive "
        "learning on (stages are then generated)")
    end_size: int | None = Field(
        None, ge=8, le=2048, description="compact form: last stage's image size (null = data.image_size)")
    num_stages: int = Field(4, ge=1, description="compact form: number of stages (equal numbers of epochs)")
    start_regularization: float = Field(
        0.33, ge=0, le=1, description="compact form: first stage's RandAugment magnitude, mixup alpha, dropout and "
        "drop-path as a fraction of their configured (final) values; grows linearly to 1")
    scale_batch: bool = Field(
        False, description="compact form: grow the batch as the image shrinks (batch x (end/size)^2, rounded to 8) "
        "with the LR scaled by the square root of the batch ratio")
    auto_batch: bool = Field(
        False, description="compact form: batch_size auto in every stage (probed per stage on GPU)")
    size_multiple: int = Field(8, ge=1, description="compact form: stage image sizes are rounded to this multiple")


class LoggingConfig(_Section):
    mlflow: bool = Field(True, description="log to MLflow; by default to its file store <run.dir>/mlruns (no server)")
    mlflow_uri: str | None = Field(
        None, description="other MLflow tracking URI, e.g. sqlite:///mlflow.db or http://host:5000 (null = file store)"
    )
    tensorboard: bool = Field(True, description="log to TensorBoard in <run.dir>/tensorboard")
    wandb: bool = Field(False, description="log to Weights & Biases (pip install taxotrain[wandb])")
    comet: bool = Field(False, description="log to Comet (pip install taxotrain[comet])")


class ParamSpace(_Section):
    """One searched config key: a float or int range (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(description="float, int or categorical")
    low: float | None = Field(None, description="lower bound (float/int)")
    high: float | None = Field(None, description="upper bound, inclusive (float/int)")
    log: bool = Field(False, description="sample on a log scale (needs low > 0)")
    step: float | None = Field(None, description="grid step (int default 1; float: none = continuous)")
    choices: list[Any] | None = Field(None, description="the values to choose from (categorical)")

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpace:
        example = "e.g. {type: float, low: 1e-4, high: 1e-2, log: true}"
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list, e.g. {type: categorical, choices: "
                                 "[resnet18, resnet34]}")
            bad = [c for c in self.choices if c is not None and not isinstance(c, bool | int | float | str)]
            if bad:
                raise ValueError(f"choice {bad[0]!r} is not a plain value; choices must be strings, numbers, "
                                 "booleans or null")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("categorical takes only 'choices' (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not choices; {example}")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both 'low' and 'high', {example}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g}); swap them")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low:g}); raise low or set log: false")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (got {self.step:g})")
        if self.log and self.step is not None and not (self.type == "int" and self.step == 1):
            raise ValueError("log scale and step cannot be combined; drop one of them")
        if self.type == "int" and any(float(v) != int(v) for v in (self.low, self.high, self.step or 1)):
            raise ValueError("int needs whole-number low/high/step; use type: float for fractions")
        return self


class TuneConfig(_Section):
    space: dict[str, ParamSpace] = Field(
        default_factory=dict, description="searched keys: dotted config key -> {type, low, "
        "high, log, step, choices}, e.g. optim.lr: {type: float, low: 1e-4, high: 1e-2, log: true}"
    )
    metric: str = Field("auto", description="val metric to optimise, e.g. val/class/top1; auto = trainer.monitor")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto = trainer.monitor_mode for the monitor, minimize for a loss, else maximize"
    )
    strategy: Literal["random", "tpe", "hyperband"] = Field(
        "tpe", description="random search, Bayesian TPE, or TPE with the Hyperband pruner (stops weak trials early)"
    )
    max_trials: int = Field(20, ge=1, description="stop when this many trials are COMPLETE or PRUNED (resume counts "
                            "the trials already in the study)")
    max_epochs_per_trial: int = Field(10, ge=1, description="trainer.max_epochs of each trial (Hyperband's budget)")
    min_epochs: int = Field(1, ge=1, description="Hyperband: epochs a trial gets before it can first be pruned")
    factor: int = Field(3, ge=2, description="Hyperband reduction factor: keep the best 1/factor at each rung")
    startup_trials: int | None = Field(
        None, ge=0, description="TPE: random trials before the model guides sampling; null = max_trials/3 in [2, 10]"
    )
    seed: int = Field(0, description="seed of the sampler (trials train with run.seed)")
    timeout: float | None = Field(
        None, gt=0, description="seconds after which no new trial starts (the running one finishes); null = none"
    )
    storage: str | None = Field(
        None, description="Optuna storage URL; null = sqlite:///<run.dir>/study.db. journal:/shared/study.log (a "
        "journal file on a shared file system) or postgresql://user:pw@host/db lets several machines share one study"
    )
    study_name: str | None = Field(None, description="study name in the storage; null = the run folder's name")
    max_failures: int = Field(3, ge=1, description="consecutive failed trials after which the study stops "
                              "(a broken config or store)")

    @field_validator("space", mode="before")
    @classmethod
    def _entries_are_maps(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("give a mapping of dotted keys, e.g. {optim.lr: {type: float, low: 1e-4, high: 1e-2}}")
        for key, entry in v.items():
            if not isinstance(entry, dict) or "type" not in entry:
                raise ValueError(f"'{key}' needs a mapping with a type, written with the full dotted key, e.g. "
                                 "optim.lr: {type: float, low: 1e-4, high: 1e-2, log: true}")
        return v

    @model_validator(mode="after")
    def _budget(self) -> TuneConfig:
        if self.min_epochs > self.max_epochs_per_trial:
            raise ValueError(f"min_epochs ({self.min_epochs}) is above max_epochs_per_trial "
                             f"({self.max_epochs_per_trial}); lower min_epochs")
        return self


DEFAULT_TASK = "image"


MEAN = "mean"  # model.backbone: the mean of model.candidates' probabilities, each fitted in closed form


def candidate_names(cfg: Config) -> list[str]:
    """The closed-form models that ``model.backbone: mean`` averages and ``auto`` chooses among: ``model.candidates``,
    else the task's own list. Each keeps its own defaults, so ``model.kwargs`` is refused."""
    names = list(cfg.model.candidates or task_rules(cfg.task).candidates)
    if not names:
        raise ConfigError(f"model.backbone: {cfg.model.backbone} works with closed-form models, and task: {cfg.task} "
                          "has none; name a backbone")
    if MEAN in names or "auto" in names:
        raise ConfigError("bad value for 'model.candidates': list model names (e.g. minirocket, hydra), not "
                          f"{MEAN} or auto")
    if cfg.model.kwargs:
        raise ConfigError(f"model.kwargs with model.backbone: {cfg.model.backbone}: each candidate keeps its own "
                          "defaults (n_kernels means different things to each); remove model.kwargs, or name one "
                          "backbone")
    return names


def with_model(cfg: Config, **settings: Any) -> Config:
    """``cfg`` with the given ``model.*`` settings replaced, e.g. ``with_model(cfg, backbone="hydra")``."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=settings)})


@dataclass(frozen=True)
class TaskRules:
    """What the config layer knows of a registered task (``taxotrain.tasks.register_task`` fills this in).

    ``default_backbone`` replaces ``model.backbone`` when a config of this task names none; ``init_defaults`` are the
    values ``init-config --task NAME`` prints over the schema defaults; ``not_applicable`` maps each dotted key (or
    section) that does nothing for this task to what it applies to, so that setting it is an error, not a no-op.
    """

    description: str
    default_backbone: str
    candidates: tuple[str, ...] = ()  # what model.backbone: auto chooses among (closed-form models; none = no auto)
    init_defaults: dict[str, Any] = dataclass_field(default_factory=dict)
    not_applicable: dict[str, str] = dataclass_field(default_factory=dict)


_TASK_RULES: dict[str, TaskRules] = {}


def register_task_rules(name: str, rules: TaskRules) -> None:
    """Make ``task: <name>`` a valid config value (called by ``taxotrain.tasks.register_task``)."""
    _TASK_RULES[name] = rules


def task_rules(name: str) -> TaskRules:
    """The rules of a registered task; a one-line error listing the registered ones otherwise."""
    if name not in _TASK_RULES:
        raise ConfigError(f"bad value for 'task': {name!r}; allowed: {', '.join(sorted(_TASK_RULES))}")
    return _TASK_RULES[name]


class Config(_Section):
    task: str = Field(DEFAULT_TASK, description="what is trained: a registered task (taxotrain.list_tasks()): image "
                      "classification, signal (1-D series) classification, embedding (image embeddings trained "
                      "with margin losses, for retrieval and few-shot galleries) or prior (a place/date prior trained "
                      "on an occurrence store)")
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    progressive: ProgressiveConfig = Field(default_factory=ProgressiveConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)

    @field_validator("task")
    @classmethod
    def _registered(cls, v: str) -> str:
        if _TASK_RULES and v not in _TASK_RULES:
            raise ValueError(f"allowed: {', '.join(sorted(_TASK_RULES))}")
        return v

    @model_validator(mode="after")
    def _task_defaults(self) -> Config:
        """A config that names no backbone gets its task's default backbone."""
        rules = _TASK_RULES.get(self.task)
        if rules is not None and "backbone" not in self.model.model_fields_set:
            self.model.backbone = rules.default_backbone
        return self


def default_config(task: str = DEFAULT_TASK) -> Config:
    """The defaults of ``task`` (what ``init-config --task`` prints): the schema's, with the task's own over them."""
    return Config.model_validate(_deep_merge({"task": task}, task_rules(task).init_defaults))


def check_task_keys(cfg: Config) -> None:
    """Refuse settings that do nothing for ``cfg.task``: a key its task rules list as not applicable, set to a value
    other than the schema default. The one-line error names the key, the task and what the key applies to."""
    rules = task_rules(cfg.task)
    given, defaults = config_to_dict(cfg), _schema_defaults()
    for key, applies in rules.not_applicable.items():
        for leaf, value in _leaves(_at(given, key), key):
            if value != _at(defaults, leaf):
                raise ConfigError(f"'{leaf}' ({value!r}) does nothing for task: {cfg.task}; it applies to {applies}. "
                                  f"Remove it from the config (or set task to one it applies to)")


def _at(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _leaves(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{prefix}.{k}")]
    return [(prefix, value)]


_DEFAULTS: dict[str, Any] | None = None


def _schema_defaults() -> dict[str, Any]:
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = config_to_dict(Config())
    return _DEFAULTS


# --------------------------------------------------------------------------------------------------------- loading


def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema, e.g. ``data.augment.hflip``."""
    keys = []
    for name, field in model.model_fields.items():
        sub = _section_type(field.annotation)
        keys.extend(all_keys(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"])
    return keys


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _key_problems(tree: dict[str, Any], model: type[BaseModel], prefix: str) -> list[str]:
    problems = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in model.model_fields:
            allowed = sorted(model.model_fields)
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            problems.append(f"unknown config key '{dotted}'{hint}; allowed under "
                            f"'{prefix.rstrip('.') or 'top level'}': {', '.join(allowed)}")
            continue
        sub = _section_type(model.model_fields[key].annotation)
        if sub is not None:
            if not isinstance(value, dict):
                example = f"{dotted}.{next(iter(sub.model_fields))}=..."
                problems.append(f"'{dotted}' is a section; give its keys, e.g. {example}")
            else:
                problems += _key_problems(value, sub, f"{dotted}.")
    return problems


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``a.b.c=value`` into ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML (``1e-3``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value, e.g. model.backbone=resnet50")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node: dict[str, Any] = {}
    cursor = node
    parts = key.split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}``: dotted keys as config sections (values kept as given)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; write one with `taxotrain init-config > {path.name}`")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; check indentation and quoting") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (run:, data:, model:, ...)")
    return tree


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    params: str | Path | None = None,
) -> Config:
    """Build the resolved config: schema defaults <- YAML ``path`` <- ``params`` file <- dotted ``overrides``.

    Example:
        >>> cfg = load_config(None, ["model.backbone=resnet50", "trainer.max_epochs=3"])
        >>> cfg.model.backbone
        'resnet50'
    """
    tree: dict[str, Any] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), read_yaml(path)))
    if params is not None:
        layers.append((str(params), read_yaml(params)))
    for item in overrides:
        layers.append((f"override '{item}'", parse_override(item)))
    problems = [f"{source}: {p}" for source, layer in layers for p in _key_problems(layer, Config, "")]
    if problems:
        extra = len(problems) - MAX_LISTED
        raise ConfigError(" | ".join(problems[:MAX_LISTED]) + (f" | and {extra} more" if extra > 0 else ""))
    for _, layer in layers:
        tree = _deep_merge(tree, layer)
    cfg = validate_tree(tree)
    check_space(cfg)
    return cfg


def validate_tree(tree: dict[str, Any]) -> Config:
    """A config from a nested mapping: schema validation, then the task's rules (:func:`check_task_keys`); every
    problem is a one-line :class:`ConfigError`."""
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(one_line_error(exc)) from exc
    check_task_keys(cfg)
    return cfg


# keys a trial must not change: where it writes, and the study's own settings
_UNSEARCHABLE = ("run.dir", "tune.")


def check_space(cfg: Config) -> None:
    """Check every ``tune.space`` key names a config key and that its bounds/choices are values the key accepts.

    Raises a one-line :class:`ConfigError` naming ``tune.space.<key>`` and the fix.
    """
    keys = all_keys()
    base = config_to_dict(cfg)
    base.pop("tune")
    for key, spec in cfg.tune.space.items():
        where = f"tune.space.{key}"
        if key.startswith(_UNSEARCHABLE):
            raise ConfigError(f"{where}: '{key}' cannot be searched (each trial sets run.dir and tune.*); remove it")
        # model.kwargs.<name>: a network's own argument (e.g. resnet1d's width), checked when the network is built
        if key not in keys and not (key.startswith("model.kwargs.") and len(key) > len("model.kwargs.")):
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{where}: '{key}' is not a config key{hint}; use a dotted key from docs/config.md, "
                              "e.g. optim.lr")
        for what, value in _probes(spec):
            try:
                check_task_keys(Config.model_validate(_deep_merge(base, nested({key: value}))))
            except (ValidationError, ConfigError) as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(exc, ValidationError) \
                    else str(exc)
                raise ConfigError(f"{where}: {what} {value!r} is not a valid '{key}' ({msg}); change the "
                                  f"{'choices' if spec.type == 'categorical' else 'range or type'}") from exc


def _probes(spec: ParamSpace) -> list[tuple[str, Any]]:
    """Values a search space can produce that must all be valid: its ends, a midpoint, every choice."""
    if spec.type == "categorical":
        return [("choice", c) for c in spec.choices or []]
    low, high = float(spec.low or 0), float(spec.high or 0)
    if spec.type == "int":
        return [("low", int(low)), ("high", int(high))]
    # an off-centre point, so that a float range over an int key is caught (36.0 would pass as an int, 31.4 not)
    inner = low * (high / low) ** 0.382 if spec.log else low + (high - low) * 0.382
    return [("low", low), ("high", high), ("a value such as", round(inner, 6))]


MAX_LISTED = 5  # problems listed in one error line; more are counted


def one_line_error(exc: ValidationError) -> str:
    """Every problem of a validation error (up to ``MAX_LISTED``) on one line, each naming its key."""
    parts = []
    for err in exc.errors()[:MAX_LISTED]:
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal[")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed:")
        hint = "; in YAML maps put a space after each colon, e.g. {class: 0.3}" if ":" in key else ""
        parts.append(f"bad value for '{key}': {err.get('input')!r}; {msg}{hint}")
    extra = len(exc.errors()) - MAX_LISTED
    return " | ".join(parts) + (f" | and {extra} more" if extra > 0 else "")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-Python dict of a config (JSON/YAML/torch-safe)."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config to ``path``."""
    Path(path).write_text(dump_yaml(cfg))


# ------------------------------------------------------------------------------------------- commented template


def commented_yaml(model: type[BaseModel] = Config, indent: int = 0, instance: BaseModel | None = None) -> str:
    """The default config as YAML with each key's description as a comment (what ``init-config`` prints)."""
    instance = instance if instance is not None else model()
    pad = "  " * indent
    lines: list[str] = []
    if indent == 0:
        lines += ["# taxotrain config. Every key can be overridden on the command line, e.g.",
                  "#   taxotrain fit --config cfg.yaml data.store=plankton.h5 model.backbone=resnet50", ""]
    for name, field in model.model_fields.items():
        value = getattr(instance, name)
        sub = _section_type(field.annotation)
        if sub is not None:
            if indent == 0:
                lines.append("")
            lines.append(f"{pad}{name}:")
            lines.append(commented_yaml(sub, indent + 1, value))
            continue
        dumped = yaml.safe_dump({name: _plain(value)}, default_flow_style=True, width=10_000).strip()
        dumped = dumped[1:-1] if dumped.startswith("{") else dumped
        comment = f"  # {_described(field)}" if field.description else ""
        lines.append(f"{pad}{dumped}{comment}")
    return "\n".join(lines) + ("\n" if indent == 0 else "")


def _choices(annotation: Any) -> list[Any]:
    """The values a ``Literal`` annotation (alone or in a union) allows."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [c for arg in get_args(annotation) for c in _choices(arg)]


def _described(field: Any) -> str:
    """A field's description, with the values it allows when they are a fixed set and not all named already."""
    text = field.description or ""
    choices = _choices(field.annotation)
    if choices and not all(str(c) in text for c in choices):
        text += f" (allowed: {', '.join(str(c) for c in choices)})"
    return text


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def markdown_reference() -> str:
    """Config reference as a Markdown table, generated from the schema (``docs/config.md``)."""
    rows = ["# Config reference", "",
            "Generated from `taxotrain.config` by `python -m taxotrain.docs > docs/config.md`; a test checks it is "
            "current. Every key can be set in the YAML file or on the command line as `key=value`.", "",
            "| key | default | description |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            sub = _section_type(field.annotation)
            if sub is not None:
                walk(sub, value, f"{prefix}{name}.")
            else:
                default = yaml.safe_dump(_plain(value), default_flow_style=True).strip().removesuffix("...").strip()
                rows.append(f"| `{prefix}{name}` | `{default}` | {_described(field)} |")

    walk(Config, Config(), "")
    return "\n".join(rows) + "\n"
