"""What the trainers share: the config flags, the run start, and one-line errors.

Every trainer resolves one `RunConfig` (`keypoint_gnn.run_config`): its defaults, then
`--preset`, `--config FILE`, the shortcut flags, then `--set PATH=VALUE`. Model code lives in
keypoint_gnn; a trainer parses, builds, fits, evaluates and writes.
"""
import argparse
import contextlib
import json
import pathlib
import re
import sys
import tempfile

import numpy as np

import keypoint_gnn  # noqa: F401  (selects tf_keras before anything else touches tf.keras)
from keypoint_gnn import atomic, precise_bn, presets, registry, training, xla
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset
from keypoint_gnn.export.checks import check_export_name, non_finite_weights
from keypoint_gnn.models import model_name
from keypoint_gnn.run_config import resolve
from keypoint_gnn.run_directory import RunDirectory, RunDirectoryError
from keypoint_gnn.sections import ConfigError
from keypoint_gnn.training import STRATEGIES

# Shortcut flag -> the RunConfig field it sets (`--set` reaches every field).
SHORTCUTS = {
    "dataset": "data.dataset",
    "image_size": "model.image_size",
    "detector": "model.detector.kind",
    "gnn": "model.graph.kind",
    "keypoints": "model.detector.num_keypoints",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "loss": "model.head.reconstruction_loss",  # trainers.reconstruct
}


class UserError(Exception):
    """A bad flag, path or file: reported in one line, without a traceback."""


class ListPresets(argparse.Action):
    def __init__(self, option_strings, dest, task=None, **kwargs):
        self.task = task
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(presets.describe(self.task))
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, as `run_main` reports the others: "error: ...
    (see ... --help)" and exit status 2, without the usage block argparse prints first."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser_for(doc, prog):
    return Parser(prog=f"python -m trainers.{prog}", description=doc,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_flags(parser, task, *, data=True, model=True, train=True):
    """--preset, --config, --set, --list-presets and the shortcut flags of the sections the
    trainer uses. Shortcuts default to None: the resolved config says what was used."""
    group = parser.add_argument_group("configuration (later ones win)")
    group.add_argument("--preset", default="default", metavar="NAME",
                       help="named settings, see --list-presets (default: %(default)s)")
    group.add_argument("--list-presets", action=ListPresets, task=task,
                       help="print the presets and exit")
    group.add_argument("--config", default=None, metavar="FILE",
                       help="JSON file of config fields: a run's config.json, trainers.tune's "
                            "best_config.json, or {\"data\": ..., \"model\": ..., \"train\": ...}")
    group.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="set any config field, repeatable, e.g. --set detector.refinement=centre "
                            "--set graph.layers=5 --set train.recalibrate_bn=50")
    if data:
        group = parser.add_argument_group("data")
        group.add_argument("--dataset", help="builtin (default, generated in code), "
                           "builtin:KEY=VALUE,..., folder:PATH, idx:PATH or a prepared TFDS name")
        group.add_argument("--image-size", type=int, help="square image side in pixels (default 48)")
    if model:
        group = parser.add_argument_group("model")
        group.add_argument("--detector", choices=tuple(registry.DETECTORS),
                           help="keypoint detector (default maxpool_nms)")
        group.add_argument("--gnn", choices=tuple(registry.GNNS), help="graph network (default gcn)")
        group.add_argument("--keypoints", type=int, help="keypoints per image (default 32)")
    if train:
        group = parser.add_argument_group("training")
        group.add_argument("--epochs", type=int, help="training epochs (default 8)")
        group.add_argument("--batch-size", type=int, help="global batch size (default 64)")
        group.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.002)")
    add_shortcuts(parser, *(name for name, section in (
        ("dataset", data), ("image_size", data), ("detector", model),
        ("gnn", model), ("keypoints", model), ("epochs", train), ("batch_size", train),
        ("learning_rate", train)) if section))


def add_shortcuts(parser, *names):
    """Marks flags of `parser` as shortcuts for the config fields `SHORTCUTS` names."""
    parser.set_defaults(config_shortcuts=(parser.get_default("config_shortcuts") or ()) + names)


def add_runtime_flags(parser, default_out):
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of data split, init and "
                       "augmentation (default %(default)s)")
    group.add_argument("--out", default=default_out, help="run directory; rerun with the same "
                       "--out to resume an interrupted run (default %(default)s)")
    group.add_argument("--overwrite", action="store_true",
                       help="train again into an --out that holds a finished run or another "
                            "run's checkpoint (its outputs are replaced)")
    group.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="tf.distribute strategy (default %(default)s: mirrored over all GPUs)")
    group.add_argument("--devices", default=None,
                       help="comma-separated devices for --strategy mirrored, e.g. /cpu:0,/cpu:1")
    group.add_argument("--xla", nargs="?", const="auto", default="off", choices=xla.XLA_MODES,
                       help="XLA: --xla alone = auto (the whole step on a GPU, the graph layers "
                            "on a CPU); graph | step | off (default)")
    group.add_argument("--mixed-precision", action="store_true",
                       help="mixed float16 on GPU (bfloat16 on CPU)")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                       help="Keras progress: 1 bar, 2 a line per epoch (default: 1 on a terminal)")


def run_config(args, task, defaults=None):
    """The RunConfig the flags describe; UserError for a bad preset, file, field or value."""
    try:
        return resolve(defaults=defaults, preset=presets.preset(args.preset, task),
                       config_file=args.config,
                       flags={SHORTCUTS[flag]: getattr(args, flag)
                              for flag in getattr(args, "config_shortcuts", ())},
                       assignments=args.set)
    except ConfigError as error:
        raise UserError(str(error)) from None


def check_runtime_flags(args):
    if args.devices and args.strategy != "mirrored":
        raise UserError(f"--devices applies to --strategy mirrored, not --strategy {args.strategy}")


def load_data(run, seed, task="classify", augment=None):
    data = run.data
    augment = data.augment if augment is None else augment
    return load_dataset(data.dataset, image_size=run.model.image_size,
                        batch_size=run.train.batch_size, seed=seed, data_dir=data.data_dir,
                        channels=data.channels, augment=True if augment == "auto" else augment,
                        max_examples=data.max_examples, task=task, mixup=data.mixup,
                        cutmix=data.cutmix, cache=data.cache,
                        holdout_classes=data.holdout_classes)


def start_run(args, task="classify", defaults=None, augment=None, trainer=None, check=None):
    """What every trainer does first: the config, the strategy, the run folder, the seed and
    the data.

    Everything the flags can get wrong is checked before anything slow (`check(run)` adds the
    trainer's own checks); the strategy comes before any op runs (MultiWorkerMirroredStrategy
    must configure its collectives first). The run folder comes back locked: use it as
    `with run_dir:` so that it is released. Returns (strategy, data splits, RunConfig with the
    model fitted to the data set's classes and channels, RunDirectory).
    """
    run = run_config(args, task, defaults)
    check_runtime_flags(args)
    if check is not None:
        check(run)
    strategy = training.make_strategy(args.strategy, args.devices.split(",") if args.devices else None)
    run_dir = run_directory(args, run, strategy, trainer or task).__enter__()
    try:
        keras.utils.set_random_seed(args.seed)
        args.xla_mode = xla.resolve_mode(args.xla)
        data = load_data(run, args.seed, task, augment)
        info = data.info
        try:
            model = run.model.with_data(image_size=info.image_size, channels=info.channels,
                                        num_classes=info.num_classes)
        except ValueError as error:
            raise UserError(f"{info.name}: {error}") from None
    except BaseException:
        run_dir.abandon()
        raise
    return strategy, data, run.replace(model=model), run_dir


def refuse_diverged(model, test_loss, result, out):
    """A model with a non-finite test loss or weights is neither saved nor exported: its
    metrics.json says so (strict JSON), and the run ends with a one-line error."""
    bad = dict(non_finite_weights(model))
    if not bad and np.isfinite(test_loss):
        return
    result["diverged"] = {"test_loss_finite": bool(np.isfinite(test_loss)),
                          "non_finite_weights": bad}
    atomic.write_json(pathlib.Path(out) / "metrics.json", result)
    raise UserError(
        f"training diverged (test loss {test_loss}; {sum(bad.values())} NaN/Inf weight values "
        f"in {len(bad)} variables): nothing saved or exported; try a lower --learning-rate "
        f"(details in {pathlib.Path(out) / 'metrics.json'})")


def export_name(args, run):
    """trainers.classify's export name: --name, else the model and what it was trained on;
    checked before any training."""
    name = args.name or ("plain_cnn" if args.plain_cnn else model_name(run.model))
    if not args.name:
        name = f"{name}_classify_{dataset_slug(run.data)}"
    try:
        check_export_name(name)
    except ValueError as error:
        raise UserError(f"--name: {error}") from None
    return name


def dataset_slug(data):
    """"builtin", "imagenette2" (folder:.../imagenette2), "cifar10", ..., with "_max<N>" for
    a subset: a served model's name says what it was trained on."""
    spec = data.dataset.split(":", 1)
    source = spec[1].rstrip("/").rsplit("/", 1)[-1] if spec[0] in ("folder", "idx") else data.dataset
    slug = re.sub(r"[^A-Za-z0-9]+", "_", source).strip("_").lower() or "data"
    return slug + (f"_max{data.max_examples}" if data.max_examples else "")


def save_run(out, model, run, info, name, args):
    """model.keras, config.json (the ModelConfig, which `trainers.export` and `predict` read)
    and run.json (the name, the data split the measuring tools reload, the whole RunConfig)."""
    out = pathlib.Path(out)
    with contextlib.suppress(OSError):  # BackupAndRestore leaves its folder empty after fit
        (out / "backup").rmdir()
    model.save(out / "model.keras")
    atomic.write_text(out / "config.json", run.model.to_json())
    atomic.write_json(out / "run.json", {
        "name": name, "dataset": info.name, "class_names": info.class_names,
        "plain_cnn": bool(getattr(args, "plain_cnn", False)),
        "plain_autoencoder": bool(getattr(args, "plain_autoencoder", None)), "seed": args.seed,
        "max_examples": run.data.max_examples, "preset": args.preset, "run_config": run.to_dict(),
        **({"plain_bottleneck": args.plain_autoencoder}
           if getattr(args, "plain_autoencoder", None) else {})})


def run_identity(run):
    """The RunConfig fields that make a run the same run when resumed: all of them, except
    the epochs of a constant-rate run (more may be asked for when resuming). A decaying
    schedule's shape depends on its epochs: they stay."""
    values = run.to_dict()
    if run.train.schedule == "constant":
        values["train"]["epochs"] = None
    return values


def run_directory(args, run, strategy, trainer):
    """The chief's `RunDirectory` for --out (locked, checked; see keypoint_gnn.run_directory);
    other workers of a multi-worker run get a private temporary one."""
    configuration = {"trainer": trainer, "seed": args.seed,
                     "plain_cnn": bool(getattr(args, "plain_cnn", False)),
                     "run_config": run_identity(run)}
    plain_autoencoder = getattr(args, "plain_autoencoder", None)
    if plain_autoencoder:  # True for "at-least", as before the choice existed
        configuration["plain_autoencoder"] = plain_autoencoder == "at-least" or plain_autoencoder
    path = args.out if training.is_chief(strategy) else tempfile.mkdtemp(prefix="worker-")
    return RunDirectory(path, configuration, overwrite=args.overwrite)


def verbosity(args):
    if args.verbose is not None:
        return args.verbose
    return 1 if sys.stdout.isatty() else 2


def classifier_loss_and_metrics():
    """`model.compile` arguments for a classifier's logits and integer labels."""
    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": ["accuracy"]}


def recalibrate_batch_norm(model, data, num_batches):
    """Precise BN on a compiled classifier: its test loss and accuracy with the moving
    averages, then the statistics recomputed over `num_batches` batches of `data.train`."""
    loss, accuracy = model.evaluate(data.test, verbose=0)
    used = precise_bn.recalibrate_batch_norm(model, data.train, num_batches)
    return {"batches": used, "test_accuracy_moving_averages": float(accuracy),
            "test_loss_moving_averages": float(loss)}


# What `measured_data` falls back to for a run without run.json.
_MEASURED_DATA_DEFAULTS = {"dataset": "builtin", "seed": 0, "max_examples": None}


def add_measured_runs_flags(parser):
    """Run directories to measure and the data set to measure them on: by default the runs'
    own (their run.json), see `measured_data`."""
    parser.add_argument("runs", nargs="+", type=pathlib.Path)
    parser.add_argument("--dataset", default=None, help="default: the runs' own (run.json)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="default: the runs' own (run.json), else all")
    parser.add_argument("--seed", type=int, default=None,
                        help="data split seed; default: the runs' own (run.json), else 0")


def read_run_json(run_dir):
    """RUN_DIR/run.json as a dict ({} when the run has none); UserError for a bad file."""
    path = pathlib.Path(run_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path}: not JSON ({error})") from None
    if not isinstance(recorded, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(recorded).__name__}")
    return recorded


def measured_data(args):
    """(dataset, seed, max_examples) to measure `args.runs` on: each flag given wins; the others
    come from the runs' run.json, else the defaults (builtin, 0, all). UserError when the runs
    were trained on different splits."""
    recorded = {str(run): read_run_json(run) for run in args.runs}
    choice = {}
    for name, default in _MEASURED_DATA_DEFAULTS.items():
        given = getattr(args, name)
        if given is not None:
            choice[name] = given
            continue
        found = {run: values.get(name, default) for run, values in recorded.items()}
        if len(set(map(repr, found.values()))) > 1:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"the runs were trained with different {name} values {found}; "
                            f"measure them separately or pass {flag}")
        choice[name] = next(iter(found.values()))
    return choice["dataset"], choice["seed"], choice["max_examples"]


def run_main(main):
    """Runs `main()`, turning user errors into a one-line message and exit status 2."""
    try:
        return main()
    except (UserError, RunDirectoryError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
