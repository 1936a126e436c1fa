"""Flags and run-directory plumbing shared by the trainers. Model code lives in keypoint_gnn."""
import json
import pathlib
import sys

import keypoint_gnn  # noqa: F401  (selects tf_keras before anything else touches tf.keras)
from keypoint_gnn import ModelConfig
from keypoint_gnn import keypoints, precise_bn, training, xla
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset
from keypoint_gnn.training import STRATEGIES

# Flag name -> ModelConfig field, for the model flags every trainer shares.
MODEL_FLAGS = {
    "detector": "detector",
    "gnn": "gnn",
    "graph_layers": "graph_layers",
    "graph_units": "graph_units",
    "keypoints": "num_keypoints",
    "score_activation": "score_activation",
    "nms_pool_size": "nms_pool_size",
    "grid_cell_size": "grid_cell_size",
    "points_per_cell": "grid_points_per_cell",
    "offset_mode": "offset_mode",
    "diffpool_clusters": "diffpool_clusters",
    "dsnt_resolution": "dsnt_resolution",
    "dsnt_spread": "dsnt_spread",
    "dsnt_spread_weight": "dsnt_spread_weight",
    "dsnt_straight_through": "dsnt_straight_through",
    "offset_margin": "offset_margin",
    "standardize_offsets": "standardize_offsets",
    "offset_uniformity_weight": "offset_uniformity_weight",
    "perturbed_samples": "perturbed_samples",
    "perturbed_sigma": "perturbed_sigma",
    "perturbed_selection": "perturbed_selection",
    "perturbed_estimator": "perturbed_estimator",
    "selection_noise": "selection_noise",
    "subpixel_refinement": "subpixel_refinement",
    "image_size": "image_size",
    "head_skip": "head_skip",
}


class UserError(Exception):
    """A bad flag, path or file: reported in one line, without a traceback."""


def add_data_flags(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="builtin",
                       help="builtin (default, generated; builtin:KEY=VALUE,... sets its options, e.g. "
                            "builtin:max_rotation_degrees=45,num_classes=10,scale_range=0.4-0.8), "
                            "a TFDS name (cifar10, imagenette/160px, ...), folder:PATH or idx:PATH")
    group.add_argument("--data-dir", default=None, help="TFDS data directory (nothing is downloaded)")
    group.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default 48)")
    group.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="convert images to 1 or 3 channels (default: the data set's)")
    group.add_argument("--max-examples", type=int, default=None, help="cap on each split's examples")
    group.add_argument("--augment", default=True, help="flip,crop | crop | flip | none (default: per data set)")


# What `measured_data` falls back to for a run without run.json (pre-training runs, runs from
# before run.json recorded its split).
_MEASURED_DATA_DEFAULTS = {"dataset": "builtin", "seed": 0, "max_examples": None}


def add_measured_runs_flags(parser):
    """Run directories to measure and the data set to measure them on: by default the runs'
    own (their run.json), see `measured_data`."""
    parser.add_argument("runs", nargs="+", type=pathlib.Path)
    parser.add_argument("--dataset", default=None,
                        help="default: the runs' own (run.json), else builtin")
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
    come from the runs' run.json (trainers.classify records them), else the defaults
    (builtin, 0, all). Raises UserError when the runs were trained on different splits."""
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


def add_model_flags(parser):
    group = parser.add_argument_group("model (override --config)")
    group.add_argument("--config", default=None, help="JSON ModelConfig, as written by trainers.tune")
    group.add_argument("--detector", choices=("attention", "maxpool_nms", "grid", "perturbed_topk"), default=None)
    group.add_argument("--gnn", choices=("gcn", "diffpool", "none"), default=None)
    group.add_argument("--graph-layers", type=int, default=None)
    group.add_argument("--graph-units", type=int, default=None)
    group.add_argument("--keypoints", type=int, default=None, help="keypoints per image (N)")
    group.add_argument("--score-activation", choices=("linear", "sigmoid"), default=None)
    group.add_argument("--nms-pool-size", type=int, default=None,
                       help="NMS window side in feature-map pixels, for maxpool_nms and "
                            "perturbed_topk (1: perturbed top-k over all locations)")
    group.add_argument("--grid-cell-size", type=int, default=None, help="feature-map pixels")
    group.add_argument("--points-per-cell", type=int, default=None)
    group.add_argument("--offset-mode", default=None,
                       help="grid regressor offsets: sigmoid (paper), softmax (SuperPoint), dsnt")
    group.add_argument("--dsnt-resolution", type=int, default=None, help="DSNT heat-map side per cell")
    group.add_argument("--dsnt-spread", type=float, default=None,
                       help="DSNT: target standard deviation of each cell's heat map, in bins")
    group.add_argument("--dsnt-spread-weight", type=float, default=None,
                       help="DSNT: weight of the heat-map spread penalty (0: none)")
    group.add_argument("--dsnt-straight-through", action="store_const", const=True, default=None,
                       help="DSNT: offsets at the highest bin's centre, soft-argmax gradient")
    group.add_argument("--offset-margin", type=float, default=None,
                       help="grid regressor: offsets span [-G, 1+G] cells instead of [0, 1], "
                            "G in [0, 1] (YOLOv4 grid sensitivity; 0.5 = YOLOv5)")
    group.add_argument("--standardize-offsets", action="store_const", const=True, default=None,
                       help="grid regressor, sigmoid offsets: standardise each image's offset "
                            "logits over its cells (no offset common to every cell)")
    group.add_argument("--offset-uniformity-weight", type=float, default=None,
                       help="grid regressor: weight of a loss pulling the selected keypoints' "
                            "in-cell offsets towards a uniform spread (0: none)")
    group.add_argument("--perturbed-samples", type=int, default=None, help="perturbed top-k noise samples")
    group.add_argument("--perturbed-sigma", type=float, default=None, help="perturbed top-k noise scale")
    group.add_argument("--perturbed-selection", choices=keypoints.PERTURBED_SELECTIONS, default=None,
                       help="perturbed top-k: hard forward + perturbed gradient (marginal, default), "
                            "averaged sorted slots (slots, Cordonnier et al.), hard forward + "
                            "gradient of the blended candidate features (features), or of the "
                            "blended keypoints: features, positions and write-back (keypoints)")
    group.add_argument("--perturbed-estimator", choices=keypoints.PERTURBED_ESTIMATORS, default=None,
                       help="perturbed top-k gradient: sampled perturbed-optimiser estimator "
                            "(default) or its noise-free threshold approximation (marginal "
                            "selection only)")
    group.add_argument("--selection-noise", type=float, default=None,
                       help="attention / maxpool_nms: in training, select on the scores plus "
                            "Gaussian noise of this scale relative to each image's score spread "
                            "(explores low-scoring locations; inference unchanged; 0: off)")
    group.add_argument("--subpixel-refinement", choices=keypoints.SUBPIXEL_REFINEMENTS,
                       default=None,
                       help="attention / maxpool_nms / perturbed_topk (marginal): move each "
                            "keypoint to the soft-argmax of the scores in the 3x3 cells around "
                            "it (neighbourhood) or in its NMS window (window), or put it at "
                            "its window's centre (centre); default none")
    group.add_argument("--diffpool-clusters", type=int, default=None)
    group.add_argument("--head-skip", action="store_const", const=True, default=None,
                       help="classifier head also sees the CNN feature map (beyond the paper)")
    group.add_argument("--detector-weights", default=None,
                       help="pre-trained detector weights from trainers.pretrain_keypoints")


def add_training_flags(parser, default_out, default_epochs):
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=default_epochs)
    group.add_argument("--batch-size", type=int, default=64, help="global batch size")
    group.add_argument("--learning-rate", type=float, default=2e-3)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--xla", nargs="?", const="auto", default="off", choices=xla.XLA_MODES,
                       help="XLA: --xla alone = auto (whole step on a GPU, only the graph layers on a "
                            "CPU, where XLA's convolutions are slower); graph | step | off (default)")
    group.add_argument("--mixed-precision", action="store_true",
                       help="mixed float16 on GPU (bfloat16 on CPU)")
    group.add_argument("--strategy", choices=STRATEGIES, default="auto")
    group.add_argument("--devices", default=None,
                       help="comma-separated devices for --strategy mirrored, e.g. /cpu:0,/cpu:1")
    group.add_argument("--out", default=default_out, help="run directory; rerun with the same --out to resume")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                       help="Keras progress: 1 bar, 2 a line per epoch (default: 1 on a terminal, else 2)")


def check_training_flags(args):
    for name in ("epochs", "batch_size"):
        value = getattr(args, name)
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')}={value} must be at least 1")
    if not args.learning_rate > 0:
        raise UserError(f"--learning-rate={args.learning_rate} must be positive")
    if args.devices and args.strategy != "mirrored":
        raise UserError(f"--devices applies to --strategy mirrored, not --strategy {args.strategy}")


def model_config(args, **data_fields):
    """ModelConfig from defaults <- --config file <- explicit model flags <- the data set's
    num_classes and channels."""
    values = {}
    if args.config:
        path = pathlib.Path(args.config)
        if not path.is_file():
            raise UserError(f"--config {path}: no such file")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"--config {path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise UserError(f"--config {path} must hold a JSON object of ModelConfig fields")
        values = values.get("model_config", values)
    for flag, field in MODEL_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[field] = value
    values.update(data_fields)
    try:
        return ModelConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None


def start_run(args, *, task="classify", augment=None, **config_fields):
    """What every trainer does first: the strategy, the seed, the data and the ModelConfig.

    The strategy comes before anything else, because MultiWorkerMirroredStrategy must configure
    its collectives before the first op runs. Returns (strategy, data splits, config).
    """
    strategy = training.make_strategy(args.strategy, args.devices.split(",") if args.devices else None)
    keras.utils.set_random_seed(args.seed)
    args.xla_mode = xla.resolve_mode(args.xla)
    image_size = model_config(args).image_size  # flags and --config, checked before the data
    data = load_dataset(args.dataset, image_size=image_size, batch_size=args.batch_size,
                        seed=args.seed, data_dir=args.data_dir, channels=args.channels,
                        augment=args.augment if augment is None else augment,
                        max_examples=args.max_examples, task=task)
    info = data.info
    config = model_config(args, num_classes=info.num_classes, channels=info.channels,
                          image_size=info.image_size, **config_fields)
    return strategy, data, config


def classifier_loss_and_metrics():
    """`model.compile` arguments for a classifier's logits and integer labels, shared by
    trainers.classify and the tools that evaluate its runs."""
    return dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])


def recalibrate_batch_norm(model, data, num_batches):
    """Precise BN on a compiled classifier: its test loss and accuracy with the moving
    averages, then the statistics recomputed over `num_batches` batches of `data.train`."""
    loss, accuracy = model.evaluate(data.test, verbose=0)
    used = precise_bn.recalibrate_batch_norm(model, data.train, num_batches)
    return {"batches": used, "test_accuracy_moving_averages": float(accuracy),
            "test_loss_moving_averages": float(loss)}


def run_main(main):
    """Runs `main()`, turning user errors into a one-line message and exit status 2."""
    try:
        return main()
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def verbosity(args):
    if args.verbose is not None:
        return args.verbose
    return 1 if sys.stdout.isatty() else 2
