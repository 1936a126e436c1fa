"""Pre-train the grid coordinate regressor on SIFT or ORB keypoints (paper §4.2).

  python -m trainers.pretrain_keypoints --method sift --out runs/pre
  python -m trainers.classify --detector grid --detector-weights runs/pre/detector.weights.h5

Writes to --out: detector.weights.h5 (load with `trainers.classify --detector-weights` or
`trainers.reconstruct --detector-weights`, with the same model settings), metrics.json (test
loss, border fraction of the predicted offsets against the targets'), offsets.png, curves.png.
"""
import pathlib

import numpy as np

from keypoint_gnn import atomic, build_keypoint_pretrainer, metrics, models, training, viz, xla
from keypoint_gnn._backend import keras
from keypoint_gnn.keypoint_targets import (
    METHODS,
    pretraining_cell_size,
    pretraining_loss,
    targets_dataset,
)
from trainers import common

DEFAULTS = {"model": {"detector": {"kind": "grid"}}, "train": {"epochs": 5}}


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "pretrain_keypoints")
    common.add_config_flags(parser, "classify")
    parser.add_argument("--method", choices=METHODS, default="sift",
                        help="keypoints to imitate (default %(default)s)")
    common.add_runtime_flags(parser, default_out="runs/pretrain_keypoints")
    return parser.parse_args(argv)


def check_grid(run):
    if run.model.detector.kind != "grid":
        raise common.UserError(f"detector.kind={run.model.detector.kind!r}: pre-training "
                               "applies to the grid regressor only ('grid')")


def main(argv=None):
    args = parse_args(argv)
    strategy, data, run, run_dir = common.start_run(
        args, "classify", DEFAULTS, augment="none", trainer="pretrain_keypoints", check=check_grid)
    with run_dir:
        return train(args, strategy, data, run, run_dir)


def train(args, strategy, data, run, run_dir):
    config, info = run.model, data.info
    out = pathlib.Path(args.out)
    cell_px = pretraining_cell_size(config)
    splits = {name: targets_dataset(getattr(data, name), cell_px, config.detector.points_per_cell,
                                    args.method).cache()
              for name in ("train", "validation", "test")}

    with strategy.scope():
        model = build_keypoint_pretrainer(config)
        model.compile(optimizer=keras.optimizers.Adam(run.train.learning_rate),
                      loss=pretraining_loss,
                      **xla.compile_kwargs(args.xla_mode))
    epoch_log = run_dir.epoch_log()
    with xla.jit_graph_section(model, args.xla_mode):
        model.fit(splits["train"], validation_data=splits["validation"], epochs=run.train.epochs,
                  callbacks=[epoch_log] + training.standard_callbacks(out, "val_loss", "min"),
                  verbose=common.verbosity(args))
        test_loss = model.evaluate(splits["test"], verbose=0)

    test_images, test_targets = training.dataset_arrays(splits["test"])
    predicted = model.predict(test_images, verbose=0)
    present = test_targets[..., 2] > 0
    # The offsets of the cells' most confident predictions, as the detector would select them.
    confident = predicted[..., 2] > 0
    predicted_offsets = predicted[..., :2][confident] if confident.any() else predicted[..., :2].reshape(-1, 2)
    result = {
        "test_loss": float(test_loss),
        "method": args.method,
        "cell_size_pixels": cell_px,
        "target_keypoints_per_image": float(present.sum() / len(test_images)),
        "border_fraction_predicted": metrics.border_fraction(predicted_offsets),
        "border_fraction_targets": metrics.border_fraction(test_targets[..., :2][present]),
        **training.speed_summary(run_dir.epoch_seconds(), info.num_examples["train"]),
        "dataset": info.name,
        "config": run.to_dict(),
        "command": training.command_line(),
        "history": run_dir.history(),
    }
    common.refuse_diverged(model, test_loss, result, out)
    models.detector_model(model).save_weights(out / "detector.weights.h5")
    atomic.write_text(out / "config.json", config.to_json())
    viz.plot_offset_histogram(np.asarray(predicted_offsets), out / "offsets.png")
    viz.plot_curves(result["history"], out / "curves.png")
    atomic.write_json(out / "metrics.json", result)
    print(f"test loss {test_loss:.4f}; border fraction {result['border_fraction_predicted']:.3f} "
          f"(targets {result['border_fraction_targets']:.3f}); weights in {out / 'detector.weights.h5'}")
    return result


if __name__ == "__main__":
    common.run_main(main)
