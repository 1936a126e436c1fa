"""Train a keypoint-GNN image classifier: `python -m trainers.classify [flags]`.

With no flags: the built-in constellation data set, max-pool NMS keypoints and a 4-layer GCN,
a few minutes on a 2-core CPU. Writes to --out: metrics.json, keypoints.png, curves.png,
model.keras, config.json, run.json, TensorBoard logs and checkpoints; exports a SavedModel to
saved_models/<name>/<version>/.
"""
import argparse
import pathlib
import time

from keypoint_gnn import build_classifier, build_plain_cnn, models, training, viz, xla
from keypoint_gnn._backend import keras
from keypoint_gnn.anchoring import OffsetAnchoredTrainer
from keypoint_gnn.keypoint_targets import (
    METHODS,
    pretraining_cell_size,
    targets_dataset,
)
from keypoint_gnn.sampled_selection import (
    SampledSelectionTrainer,
    check_sampled_selection,
)
from keypoint_gnn.swap_values import check_swap_config
from trainers import common

ANCHOR_LOSSES = ("mse", "ce")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_data_flags(parser)
    common.add_model_flags(parser)
    common.add_training_flags(parser, default_out="runs/classify", default_epochs=8)
    parser.add_argument("--plain-cnn", action="store_true",
                        help="train the plain CNN whose parameter count matches the keypoint model")
    parser.add_argument("--name", default=None, help="export name (default: from the run)")
    parser.add_argument("--export-dir", default="saved_models", help="TF Serving model base directory")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--recalibrate-bn", type=int, default=0, metavar="BATCHES",
                        help="after training, recompute the batch-norm statistics with the final "
                             "weights over this many training batches (precise BN) before the "
                             "test evaluation and export; 0 (default): keep the moving averages")
    anchor = parser.add_argument_group("keypoint anchoring (grid regressor)")
    anchor.add_argument("--anchor-weight", type=float, default=0.0,
                        help="keep the offsets' SIFT/ORB pre-training loss on in task training, "
                             "with this weight (0: off)")
    anchor.add_argument("--anchor-loss", choices=ANCHOR_LOSSES, default="mse",
                        help="mse: squared error of the offsets; ce: cross-entropy of the heat map "
                             "on the target's bin (softmax/dsnt offsets)")
    anchor.add_argument("--anchor-method", choices=METHODS, default="sift",
                        help="keypoints the offsets are anchored to")
    anchor.add_argument("--anchor-confidence", action="store_true",
                        help="anchor the confidences (which keypoints are selected) too: the "
                             "whole pre-training loss")
    sampled = parser.add_argument_group(
        "selection gradient from sampled losses (attention, maxpool_nms, perturbed_topk)")
    sampled.add_argument("--selection-samples", type=int, default=0, metavar="S",
                         help="rate S >= 2 perturbed selections per image and step by their real "
                              "loss and train the detector's scores with that (score-function) "
                              "gradient too; 0 (default): off")
    sampled.add_argument("--selection-sigma", type=float, default=None,
                         help="noise scale of the sampled selections, relative to each image's "
                              "spread of the candidates' raw scores (default 0.5)")
    sampled.add_argument("--selection-weight", type=float, default=None,
                         help="weight of the sampled-loss selection term (default 1)")
    args = parser.parse_args(argv)
    common.check_training_flags(args)
    for name in ("selection_sigma", "selection_weight"):
        if getattr(args, name) is not None and not args.selection_samples:
            raise common.UserError(f"--{name.replace('_', '-')} applies with --selection-samples "
                                   "S (S >= 2)")
    args.selection_sigma = 0.5 if args.selection_sigma is None else args.selection_sigma
    args.selection_weight = 1.0 if args.selection_weight is None else args.selection_weight
    if args.selection_samples:
        try:
            check_sampled_selection(args.selection_samples, args.selection_sigma,
                                    args.selection_weight, names=(
                                        "--selection-samples", "--selection-sigma",
                                        "--selection-weight"))
        except ValueError as error:
            raise common.UserError(f"{error}; --selection-samples 0 turns it off") from None
    if not args.anchor_weight >= 0:
        raise common.UserError(f"--anchor-weight={args.anchor_weight} must be >= 0")
    if args.recalibrate_bn < 0:
        raise common.UserError(f"--recalibrate-bn={args.recalibrate_bn} must be >= 0 (batches; "
                               "0 keeps the moving averages)")
    return args


def check_anchoring(args, config):
    if not args.anchor_weight:
        return
    if args.plain_cnn or config.detector != "grid":
        raise common.UserError(f"--anchor-weight applies to --detector grid, not "
                               f"{'--plain-cnn' if args.plain_cnn else '--detector ' + config.detector}")
    if args.anchor_loss == "ce" and config.offset_mode == "sigmoid":
        raise common.UserError("--anchor-loss ce needs --offset-mode softmax or dsnt (a heat map "
                               "per slot); sigmoid offsets anchor with --anchor-loss mse")


def check_sampled_selection_config(args, config):
    if not args.selection_samples:
        return
    if args.plain_cnn:
        raise common.UserError("--selection-samples trains a keypoint detector, not --plain-cnn")
    if args.anchor_weight:
        raise common.UserError("--selection-samples and --anchor-weight cannot be combined")
    try:
        check_swap_config(config)
    except ValueError as error:
        raise common.UserError(f"--selection-samples: {error}") from None


def anchored_splits(args, config, data):
    """(train, validation) yielding (images, (labels, SIFT/ORB cell targets))."""
    cell_px = pretraining_cell_size(config)
    return [targets_dataset(split, cell_px, config.grid_points_per_cell, args.anchor_method,
                            keep_labels=True) for split in (data.train, data.validation)]


def build_model(config, plain_cnn):
    keypoint_net = build_classifier(config)
    if not plain_cnn:
        return keypoint_net
    return build_plain_cnn(config, target_params=keypoint_net.count_params())


def compile_classifier(model, args):
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        **common.classifier_loss_and_metrics(),
        **xla.compile_kwargs(args.xla_mode),
    )


def main(argv=None):
    args = parse_args(argv)
    strategy, data, config = common.start_run(args)
    check_anchoring(args, config)
    check_sampled_selection_config(args, config)
    info = data.info
    chief = training.is_chief(strategy)
    precision = training.set_precision(args.mixed_precision)
    out = pathlib.Path(args.out)

    with strategy.scope():
        model = build_model(config, args.plain_cnn)
        if args.detector_weights and not args.plain_cnn:
            models.detector_model(model).load_weights(args.detector_weights)
        compile_classifier(model, args)
        trainer = model  # what fit trains; evaluation and export use `model`
        if args.anchor_weight:
            trainer = OffsetAnchoredTrainer(model, args.anchor_weight, args.anchor_loss == "ce",
                                            config.offset_margin, args.anchor_confidence)
            compile_classifier(trainer, args)
        if args.selection_samples:
            trainer = SampledSelectionTrainer(model, config, args.selection_samples,
                                              args.selection_sigma, args.selection_weight)
            compile_classifier(trainer, args)
    train, validation = (anchored_splits(args, config, data) if args.anchor_weight
                         else (data.train, data.validation))

    timer = training.EpochTimer()
    validation_images = None if args.plain_cnn else training.dataset_arrays(data.validation, 1)[0]
    callbacks = training.standard_callbacks(out, "val_accuracy", "max", chief, validation_images,
                                            config.feature_stride) + [timer]
    start = time.perf_counter()
    with xla.jit_graph_section(model, args.xla_mode):
        history = trainer.fit(train, validation_data=validation, epochs=args.epochs,
                              callbacks=callbacks, verbose=common.verbosity(args))
        train_seconds = time.perf_counter() - start
        recalibration = (common.recalibrate_batch_norm(model, data, args.recalibrate_bn)
                         if args.recalibrate_bn else None)
        test_loss, test_accuracy = model.evaluate(data.test, verbose=0)
    # Every worker takes part in reading the weights (batch-norm statistics are all-reduced).
    model = training.unreplicated(model, strategy, lambda: build_model(config, args.plain_cnn))
    if not chief:
        return None

    test_images, _ = training.dataset_arrays(data.test)
    result = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "parameters": int(model.count_params()),
        "architecture": "plain_cnn" if args.plain_cnn else "keypoint_gnn",
        **training.run_summary(args=args, strategy=strategy, precision=precision, info=info,
                               config=config, history=history, epoch_seconds=timer.seconds,
                               train_seconds=train_seconds),
    }
    if recalibration:
        result["batch_norm_recalibration"] = recalibration
    if not args.plain_cnn:
        quality, pixels = training.keypoint_quality(model, config, test_images, data.test_parts)
        result["keypoints"] = quality
        if config.detector == "grid":
            offset_measures, offsets = training.offset_quality(model, config, test_images)
            quality.update(offset_measures)
            viz.plot_offset_histogram(offsets.reshape(-1, 2), out / "offsets.png",
                                      offset_margin=config.offset_margin)
        viz.draw_keypoints(test_images[:16], pixels[:16], out / "keypoints.png",
                           parts=None if data.test_parts is None else data.test_parts[:16],
                           title=f"{config.detector} keypoints (red) and true parts (green)"
                           if data.test_parts is not None else f"{config.detector} keypoints")
    viz.plot_curves(history.history, out / "curves.png")

    name = args.name or ("plain_cnn" if args.plain_cnn else f"keypoint_{config.detector}_{config.gnn}")
    model.save(out / "model.keras")
    (out / "config.json").write_text(config.to_json())
    training.write_json(out / "run.json", {"name": name, "dataset": info.name,
                                           "class_names": info.class_names,
                                           "plain_cnn": args.plain_cnn,
                                           # the split the measuring tools reload
                                           "seed": args.seed, "max_examples": args.max_examples})
    if not args.no_export and not args.plain_cnn:
        from keypoint_gnn.export import export_saved_model

        version_dir = export_saved_model(model, config, base_dir=args.export_dir, name=name,
                                         class_names=info.class_names)
        result["saved_model"] = str(version_dir)
    training.write_json(out / "metrics.json", result)
    print(f"test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}, "
          f"{result['seconds_per_epoch']:.1f} s/epoch; results in {out}")
    return result


if __name__ == "__main__":
    common.run_main(main)
