"""`RunConfig`: what a trainer runs, as plain data: the data, the model and the training recipe.

    RunConfig(data=DataConfig(...), model=ModelConfig(...), train=TrainConfig(...))

Resolved in this order, each on top of the last: the trainer's defaults, a preset
(`keypoint_gnn.presets`), a JSON file, the trainer's shortcut flags, then `--set PATH=VALUE`
assignments. A path that does not start with a section name is taken under `model`
(`detector.refinement=centre` is `model.detector.refinement=centre`).
"""
import dataclasses
import json
import pathlib

from keypoint_gnn import rules
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.sections import ConfigError, Section, merge, set_path

RUN_SECTIONS = ("data", "model", "train")


@dataclasses.dataclass
class DataConfig(Section):
    """dataset: "builtin" (generated), "builtin:KEY=VALUE,...", "folder:PATH", "idx:PATH" or a
    prepared TFDS name; data_dir: TFDS folder; channels: 1 or 3 to convert, None keeps the
    source's; augment: "auto" (pad-crop, and flip where flips keep the class), "none", or
    comma-separated words of "flip", "crop" (pad and crop back) and "resized_crop" (random
    resized crop, for photos); mixup, cutmix: Beta(alpha, alpha) of the batch mixing (0 off;
    both on: one of the two per batch, at random); cache: "memory" or a folder for the decoded
    images at training size (reused by later runs on the same data, size and split);
    max_examples: cap on each split (a seeded subset); holdout_classes: K classes (seeded) kept
    out of train / validation / test, all their images a test_unseen split, reconstruction only
    (0: none)."""

    dataset: str = "builtin"
    data_dir: str | None = None
    channels: int | None = None
    augment: str = "auto"
    mixup: float = 0.0
    cutmix: float = 0.0
    cache: str = "memory"
    max_examples: int | None = None
    holdout_classes: int = 0

    def __post_init__(self):
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels!r} must be 1, 3 or null (the data set's)")
        if self.max_examples is not None:
            rules.check_positive_int("max_examples", self.max_examples)
        rules.check_augment(self.augment)
        rules.check_non_negative_number("mixup", self.mixup)
        rules.check_non_negative_number("cutmix", self.cutmix)
        if not self.cache:
            raise ValueError("cache='' must be 'memory' or a folder path")
        if (not isinstance(self.holdout_classes, int) or isinstance(self.holdout_classes, bool)
                or self.holdout_classes < 0):
            raise ValueError(f"holdout_classes={self.holdout_classes!r} must be an integer >= 0")


@dataclasses.dataclass
class TrainConfig(Section):
    """The training recipe (`keypoint_gnn.recipe` builds it from the tf_keras parts).

    epochs; batch_size (global, over all replicas); learning_rate: the peak rate;
    optimizer: "adam" or "adamw" (decoupled weight decay, none on biases and batch-norm
    scales/offsets); weight_decay: AdamW's; schedule: "constant" or "cosine" (cosine decay to
    0 after the warm-up); warmup_epochs: linear warm-up from 0 (cosine only); label_smoothing;
    ema: evaluate and export an exponential moving average of the weights, ema_momentum its
    decay per step (the averages cover the trainable weights only: with batch norm, set
    recalibrate_bn too, or the moving statistics of the raw weights are used with the averaged
    weights; measured on Imagenette2 that cost 0.6-2.9 points); recalibrate_bn: after training, recompute the batch-norm statistics over
    this many training batches (precise BN, Wu & Johnson 2021) before the test evaluation and
    export, 0 keeps the moving averages; steps_per_epoch: optimisation steps an epoch runs
    (the training split repeated), null for one pass over it. Small data sets (a few hundred
    faces) need epochs sized by steps: one pass is a handful of steps."""

    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    ema: bool = False
    ema_momentum: float = 0.999
    recalibrate_bn: int = 0
    steps_per_epoch: int | None = None

    def __post_init__(self):
        rules.check_positive_int("epochs", self.epochs)
        if self.steps_per_epoch is not None:
            rules.check_positive_int("steps_per_epoch", self.steps_per_epoch)
        rules.check_positive_int("batch_size", self.batch_size)
        rules.check_positive_number("learning_rate", self.learning_rate)
        rules.check_choice("optimizer", self.optimizer, rules.OPTIMIZERS)
        rules.check_non_negative_number("weight_decay", self.weight_decay)
        if self.weight_decay and self.optimizer != "adamw":
            raise ValueError(f"weight_decay={self.weight_decay!r} needs optimizer='adamw' "
                             f"(decoupled weight decay), not {self.optimizer!r}")
        rules.check_choice("schedule", self.schedule, rules.SCHEDULES)
        rules.check_non_negative_number("warmup_epochs", self.warmup_epochs)
        if self.warmup_epochs and self.schedule == "constant":
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} needs schedule='cosine'")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be below "
                             f"epochs={self.epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        rules.check_bool("ema", self.ema)
        if not 0.0 < self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum={self.ema_momentum!r} must be in (0, 1)")
        rules.check_non_negative_number("recalibrate_bn", self.recalibrate_bn)


@dataclasses.dataclass
class RunConfig(Section):
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def qualified(path):
    """`detector.kind` -> `model.detector.kind`; `train.epochs` stays."""
    return path if path.split(".", 1)[0] in RUN_SECTIONS else f"model.{path}"


def read_config_file(path):
    """A JSON file -> nested dict of RunConfig fields. A file holding a bare ModelConfig (as
    `config.json` of a run, or `trainers.tune`'s best_config.json) is read as its model."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of config fields")
    values = values.get("model_config", values)
    if not set(values) & set(RUN_SECTIONS):
        values = {"model": values}
    return values


def resolve(defaults=None, preset=None, config_file=None, flags=None, assignments=()):
    """The RunConfig from its layers (see the module docstring).

    Args:
      defaults, preset: nested dicts of RunConfig fields (a preset's "config").
      config_file: path of a JSON file (`read_config_file`), or None.
      flags: {dotted path: value} from shortcut flags; None values are skipped.
      assignments: "PATH=VALUE" strings.

    Raises:
      ConfigError naming the field, the value and what is valid.
    """
    values = merge(defaults or {}, preset or {})
    if config_file:
        values = merge(values, read_config_file(config_file))
    for path, value in (flags or {}).items():
        if value is not None:
            update = value
            for key in reversed(qualified(path).split(".")):
                update = {key: update}
            values = merge(values, update)
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        values = set_path(RunConfig, values, f"{qualified(path.strip())}{sep}{text}")
    return RunConfig.from_dict(values)
