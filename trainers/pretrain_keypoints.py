"""Pre-train the grid coordinate regressor on SIFT or ORB keypoints (paper §4.2):
`python -m trainers.pretrain_keypoints [flags]`.

Writes to --out: detector.weights.h5 (load with `trainers.classify --detector-weights` or
`trainers.reconstruct --detector-weights`, using the same model flags), metrics.json (test
loss, border fraction of the predicted offsets against the targets'), offsets.png, curves.png.

`--offset-loss ce` (softmax / DSNT offsets) trains each slot's heat map by cross-entropy on the
bin that holds the SIFT keypoint instead of the squared error of the offsets; with
`--offset-mode dsnt --dsnt-straight-through` the keypoints then sit where the maps peak.
"""
import argparse
import pathlib

import numpy as np

from trainers import common
from keypoint_gnn import build_keypoint_pretrainer, metrics, models, training, viz, xla
from keypoint_gnn._backend import keras
from keypoint_gnn.keypoint_targets import (METHODS, pretraining_cell_size, pretraining_loss_for,
                                           targets_dataset)

OFFSET_LOSSES = ("mse", "ce")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_data_flags(parser)
    common.add_model_flags(parser)
    common.add_training_flags(parser, default_out="runs/pretrain_keypoints", default_epochs=5)
    parser.add_argument("--method", choices=METHODS, default="sift", help="keypoints to imitate")
    parser.add_argument("--offset-loss", choices=OFFSET_LOSSES, default="mse",
                        help="mse: squared error of the offsets (paper); ce: cross-entropy of the "
                             "heat map on the target's bin (softmax/dsnt offsets only)")
    args = parser.parse_args(argv)
    common.check_training_flags(args)
    if args.detector not in (None, "grid"):
        raise common.UserError(f"--detector {args.detector}: pre-training applies to the grid regressor only")
    return args


def main(argv=None):
    args = parse_args(argv)
    args.detector = "grid"
    strategy, data, config = common.start_run(args, augment=False)
    info = data.info
    out = pathlib.Path(args.out)
    cell_px = pretraining_cell_size(config)
    splits = {name: targets_dataset(getattr(data, name), cell_px, config.grid_points_per_cell,
                                    args.method).cache()
              for name in ("train", "validation", "test")}

    if args.offset_loss == "ce" and config.offset_mode == "sigmoid":
        raise common.UserError("--offset-loss ce needs --offset-mode softmax or dsnt (a heat map "
                               "per slot); sigmoid offsets train with --offset-loss mse")
    with strategy.scope():
        model = build_keypoint_pretrainer(config, heatmaps=args.offset_loss == "ce")
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss=pretraining_loss_for(config.offset_margin),
                      **xla.compile_kwargs(args.xla_mode))
    timer = training.EpochTimer()
    with xla.jit_graph_section(model, args.xla_mode):
        history = model.fit(splits["train"], validation_data=splits["validation"],
                            epochs=args.epochs,
                            callbacks=training.standard_callbacks(out, "val_loss", "min") + [timer],
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
        "offset_loss": args.offset_loss,
        "cell_size_pixels": cell_px,
        "target_keypoints_per_image": float(present.sum() / len(test_images)),
        "border_fraction_predicted": metrics.border_fraction(
            metrics.in_cell_offsets(predicted_offsets)),
        "border_fraction_targets": metrics.border_fraction(test_targets[..., :2][present]),
        **training.speed_summary(timer.seconds, info.num_examples["train"]),
        "dataset": info.name,
        "config": config.to_dict(),
        "command": training.command_line(),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }
    models.detector_model(model).save_weights(out / "detector.weights.h5")
    (out / "config.json").write_text(config.to_json())
    viz.plot_offset_histogram(np.asarray(predicted_offsets), out / "offsets.png",
                              offset_margin=config.offset_margin)
    viz.plot_curves(history.history, out / "curves.png")
    training.write_json(out / "metrics.json", result)
    print(f"test loss {test_loss:.4f}; border fraction {result['border_fraction_predicted']:.3f} "
          f"(targets {result['border_fraction_targets']:.3f}); weights in {out / 'detector.weights.h5'}")
    return result


if __name__ == "__main__":
    common.run_main(main)
