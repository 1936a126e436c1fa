"""Export a trained classifier run for serving: `python -m trainers.export --run RUN_DIR [flags]`.

  --format savedmodel   TF Serving layout OUT/NAME/<next version>/ (default OUT saved_models)
  --format tflite       OUT/NAME[-QUANTIZE].tflite and its .json (default OUT tflite_models);
                        --quantize int8 calibrates on training images of the run's data set

RUN_DIR is what `python -m trainers.classify` writes: model.keras, config.json (the nested
`ModelConfig` JSON) and run.json ({"name", "dataset", "class_names", "run_config", ...}).

Before anything is loaded or written: the run's files, the model name (--name, else run.json's
name, else the run directory's; one rule for both formats, `check_export_name`) and --out
(a folder, writable) are checked. A model with a NaN or an infinity in its weights (a diverged
training) is not exported. Each error is one line and exit status 2; nothing is written.
"""
import json
import os
import pathlib

from keypoint_gnn._backend import keras
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.export.checks import check_export_name
from keypoint_gnn.export.saved_model import _check_class_names, export_saved_model
from keypoint_gnn.export.tflite import QUANTIZATIONS, export_tflite
from trainers import common

FORMATS = ("savedmodel", "tflite")
DEFAULT_OUT = {"savedmodel": "saved_models", "tflite": "tflite_models"}
# Top-level fields of the flat ModelConfig JSON that runs wrote before the nested config.
_FLAT_FIELDS = ("num_keypoints", "detector_filters", "gnn", "graph_layers", "head_filters")


def build_parser():
    parser = common.parser_for(__doc__, "export")
    parser.add_argument("--run", required=True,
                        help="run directory of trainers.classify (required)")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (TF Serving) or tflite (default %(default)s)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                        help="TFLite only: none (float32), float16, dynamic (int8 weights) or "
                             "int8 (int8 weights and activations; float32 input and output) "
                             "(default %(default)s)")
    parser.add_argument("--out", default=None,
                        help="base directory (default saved_models, or tflite_models for tflite)")
    parser.add_argument("--name", default=None,
                        help="model name (default: run.json's name, else the run directory's)")
    parser.add_argument("--representative-images", type=int, default=256,
                        help="int8: training images used to calibrate activation ranges "
                             "(default %(default)s)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quantize != "none" and args.format != "tflite":
        raise common.UserError(f"--quantize {args.quantize} applies to --format tflite only")
    if args.representative_images < 1:
        raise common.UserError(f"--representative-images={args.representative_images} must be "
                               "at least 1")
    return args


def read_model_config(run_dir):
    """RUN_DIR/config.json (the nested ModelConfig JSON) -> ModelConfig; UserError naming the
    run when it is not one."""
    try:
        values = json.loads((pathlib.Path(run_dir) / "config.json").read_text())
    except ValueError as error:
        raise common.UserError(f"--run {run_dir}: bad config.json: not JSON ({error})") from None
    if isinstance(values, dict) and any(name in values for name in _FLAT_FIELDS):
        raise common.UserError(
            f"--run {run_dir}: bad config.json: it holds the flat ModelConfig of keypoint-gnn "
            "before 0.2 (e.g. num_keypoints at the top level); config.json is now nested "
            "({\"detector\": {...}, \"graph\": {...}, \"head\": {...}}): retrain the run")
    try:
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise common.UserError(f"--run {run_dir}: bad config.json: {error}") from None


def read_run(run_dir):
    """RUN_DIR -> (model, config, run dict); UserError naming the missing or bad file."""
    config, run = read_run_files(run_dir)
    return load_run_model(run_dir), config, run


def read_run_files(run_dir):
    """RUN_DIR -> (config, run dict), without loading the model; UserError naming the missing
    or bad file."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise common.UserError(f"--run {run_dir}: no such directory")
    paths = {name: run_dir / name for name in ("model.keras", "config.json", "run.json")}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise common.UserError(f"--run {run_dir} lacks {', '.join(missing)}: is it a run "
                               "directory of trainers.classify (finished)?")
    config = read_model_config(run_dir)
    run = common.read_run_json(run_dir)
    if run.get("plain_cnn"):
        raise common.UserError(f"--run {run_dir} is a plain-CNN baseline: it has no keypoints "
                               "to serve; export a keypoint model's run")
    return config, run


def load_run_model(run_dir):
    """RUN_DIR/model.keras; UserError when it cannot be loaded (truncated, not a Keras file)."""
    path = pathlib.Path(run_dir) / "model.keras"
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001  (zipfile, h5py, Keras: a damaged file)
        detail = str(error).strip().splitlines()
        raise common.UserError(f"--run {run_dir}: cannot load model.keras "
                               f"({type(error).__name__}: {detail[0] if detail else ''})") \
            from None


def model_name(args, run):
    """--name, else run.json's name, else the run directory's name: checked with
    `check_export_name` (the same rule for every format); UserError naming where it came
    from."""
    run_dir = pathlib.Path(args.run)
    if args.name is not None:
        name, source = args.name, " (from --name)"
    elif run.get("name"):
        name, source = run["name"], f" (from {run_dir / 'run.json'}; pass --name NAME)"
    else:
        name = run_dir.resolve().name
        source = f" (the name of --run {run_dir}; pass --name NAME)"
    try:
        return check_export_name(name, source)
    except ValueError as error:
        raise common.UserError(str(error)) from None


def check_out_folder(folder, flag="--out", hint="name a folder (created if missing)"):
    """UserError unless `folder` is a folder this process can write, or can be created: the
    first existing folder on its path must be a writable folder."""
    folder = pathlib.Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "it" if existing == folder else f"{str(existing)!r}"
        raise common.UserError(f"{flag} {str(folder)!r}: {what} is a file, not a folder; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise common.UserError(f"{flag} {str(folder)!r}: cannot write into {str(existing)!r} "
                               "(permission denied); name a folder you can write")


def representative_images(run, config, count):
    """Up to `count` un-augmented training images (float32 (B, S, S, C) in [0, 1])."""
    import numpy as np

    from keypoint_gnn.data import load_dataset

    dataset = run.get("dataset")
    if not dataset:
        raise common.UserError("run.json has no 'dataset': int8 calibration needs the data set")
    data = (run.get("run_config") or {}).get("data") or {}
    splits = load_dataset(dataset, image_size=config.image_size, batch_size=min(count, 64),
                          seed=run.get("seed", 0), data_dir=data.get("data_dir"),
                          channels=config.channels, augment=False)
    batches, total = [], 0
    for images, _ in splits.train:
        batches.append(images.numpy())
        total += len(batches[-1])
        if total >= count:
            break
    return np.concatenate(batches)[:count]


def main(argv=None):
    args = parse_args(argv)
    config, run = read_run_files(args.run)
    name = model_name(args, run)
    try:
        class_names = _check_class_names(run.get("class_names"), config)
    except ValueError as error:
        raise common.UserError(f"{pathlib.Path(args.run) / 'run.json'}: {error}") from None
    out = pathlib.Path(args.out or DEFAULT_OUT[args.format])
    suffix = "" if args.quantize == "none" else f"-{args.quantize}"
    check_out_folder(out)
    if args.format == "savedmodel":
        check_out_folder(out / name, flag="model folder",
                         hint="remove it or pass another --name or --out")
    else:
        target = out / f"{name}{suffix}.tflite"
        for path in (target, target.with_name(f"{target.name}.json")):
            if path.is_dir():
                raise common.UserError(f"{str(path)!r} is a folder: the export cannot replace "
                                       "it; remove it or pass another --name or --out")
    model = load_run_model(args.run)
    calibration = None
    if args.quantize == "int8":
        calibration = representative_images(run, config, args.representative_images)
    try:
        if args.format == "savedmodel":
            path = export_saved_model(model, config, base_dir=out, name=name,
                                      class_names=class_names)
            print(f"exported SavedModel version {path.name} to {path}")
            return path
        path = export_tflite(model, config, target, quantize=args.quantize,
                             representative_images=calibration, class_names=class_names)
    except OSError as error:  # a full disk, a folder made read-only meanwhile, ...
        raise common.UserError(f"cannot write the export into {str(out)!r}: {error}") from None
    print(f"exported TFLite ({args.quantize}) to {path} ({path.stat().st_size} bytes)")
    return path


if __name__ == "__main__":
    common.run_main(main)
