"""Train a keypoint-GNN image classifier (paper Table 1).

  python -m trainers.classify                      # the built-in data set, preset "default"
  python -m trainers.classify --preset accurate --seed 1
  python -m trainers.classify --dataset folder:PATH --image-size 64 --set graph.layers=5

Writes to --out: metrics.json, keypoints.png, curves.png, model.keras, config.json (the
model section of the resolved RunConfig), run.json (the whole RunConfig, the seed, the classes),
TensorBoard logs; exports a SavedModel for TF Serving.
"""
import pathlib

from keypoint_gnn import (
    atomic,
    build_classifier,
    build_plain_cnn,
    models,
    recipe,
    training,
    viz,
    xla,
)
from keypoint_gnn.data import pipeline_images_per_second
from keypoint_gnn.export import export_saved_model
from trainers import common

# Batches of the training pipeline timed on their own after training (metrics.json).
PIPELINE_BATCHES = 20


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "classify")
    common.add_config_flags(parser, "classify")
    group = parser.add_argument_group("classifier")
    group.add_argument("--plain-cnn", action="store_true",
                       help="train the plain CNN whose parameter count matches the keypoint model")
    group.add_argument("--detector-weights", help="pre-trained detector weights "
                       "(detector.weights.h5 from trainers.pretrain_keypoints)")
    group.add_argument("--name", help="export name (default: keypoint_<detector>_<gnn>_classify_"
                       "<data set>, e.g. keypoint_maxpool_nms_gcn_classify_builtin)")
    group.add_argument("--export-dir", default="saved_models",
                       help="TF Serving model base directory (default %(default)s)")
    group.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    common.add_runtime_flags(parser, default_out="runs/classify")
    return parser.parse_args(argv)


def build_model(config, plain_cnn):
    keypoint_net = build_classifier(config)
    return build_plain_cnn(config, keypoint_net.count_params()) if plain_cnn else keypoint_net


def main(argv=None):
    args = parse_args(argv)
    strategy, data, run, run_dir = common.start_run(
        args, "classify", check=lambda run: common.export_name(args, run))
    with run_dir:
        return train(args, strategy, data, run, run_dir)


def train(args, strategy, data, run, run_dir):
    config, out = run.model, pathlib.Path(args.out)
    chief = training.is_chief(strategy)
    precision = training.set_precision(args.mixed_precision)
    steps = recipe.epoch_steps(run.train, data.info.num_examples["train"])
    mixed_labels = bool(run.data.mixup or run.data.cutmix)

    with strategy.scope():
        model = build_model(config, args.plain_cnn)
        if args.detector_weights and not args.plain_cnn:
            models.detector_model(model).load_weights(args.detector_weights)
        model.compile(optimizer=recipe.optimizer(run.train, steps),
                      **recipe.classification_loss(run.train, mixed_labels),
                      **xla.compile_kwargs(args.xla_mode))

    epoch_log = run_dir.epoch_log()
    raw = recipe.KeepRawWeights()
    validation_images = None if args.plain_cnn else training.dataset_arrays(data.validation, 1)[0]
    # The epoch log comes first: every epoch BackupAndRestore saves is logged before it.
    callbacks = ([epoch_log] + ([recipe.SwapEMAWeights(), raw] if run.train.ema else [])
                 + training.standard_callbacks(out, "val_accuracy", "max", chief,
                                               validation_images, config.feature_stride))
    with xla.jit_graph_section(model, args.xla_mode):
        train_seconds, _ = training.fit_or_restore(
            model, run_dir, lambda: model.fit(
                recipe.epoch_data(run.train, data.train), validation_data=data.validation,
                epochs=run.train.epochs, steps_per_epoch=run.train.steps_per_epoch,
                callbacks=callbacks, verbose=common.verbosity(args)),
            strategy, raw if run.train.ema else None)
        recalibration = (common.recalibrate_batch_norm(model, data, run.train.recalibrate_bn)
                         if run.train.recalibrate_bn else None)
        test_loss, test_accuracy = model.evaluate(data.test, verbose=0)
        evaluation = evaluate(model, data, raw.raw_weights)
    # The training pipeline alone, beside the fit's images/s: is the input the bottleneck?
    pipeline = pipeline_images_per_second(data.train, batches=min(PIPELINE_BATCHES, steps))
    # Every worker takes part in reading the weights (batch-norm statistics are all-reduced).
    model = training.unreplicated(model, strategy, lambda: build_model(config, args.plain_cnn))
    if not chief:
        return None

    result = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "parameters": int(model.count_params()),
        "architecture": "plain_cnn" if args.plain_cnn else "keypoint_gnn",
        **evaluation,
        "pipeline_images_per_second": pipeline["images_per_second"],
        **training.run_summary(args=args, strategy=strategy, precision=precision, info=data.info,
                               run=run, run_dir=run_dir, epoch_log=epoch_log,
                               train_seconds=train_seconds),
    }
    if recalibration:
        result["batch_norm_recalibration"] = recalibration
    common.refuse_diverged(model, test_loss, result, out)
    if not args.plain_cnn:
        test_images, test_labels = training.dataset_arrays(data.test)
        result["keypoints"], _ = training.report_keypoints(model, config, data, test_images, out,
                                                           test_labels)
    viz.plot_curves(result["history"], out / "curves.png")

    name = common.export_name(args, run)
    common.save_run(out, model, run, data.info, name, args)
    if not args.no_export and not args.plain_cnn:
        result["saved_model"] = str(export_saved_model(
            model, config, base_dir=args.export_dir, name=name, class_names=data.info.class_names))
    atomic.write_json(out / "metrics.json", result)
    print(f"test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}, "
          f"{result['seconds_per_epoch']:.1f} s/epoch; results in {out}")
    return result


def evaluate(model, data, raw_weights=None):
    """Test accuracies beside `model.evaluate`'s: with flip test-time augmentation where
    `flip_tta_applies`, and, for an EMA run (`raw_weights` given), those of the raw weights of
    the last epoch (the model itself holds the EMA weights)."""
    flips = flip_tta_applies(data.info)
    result = {"evaluated_weights": "ema" if raw_weights is not None else "raw"}
    if flips:
        result["test_accuracy_flip_tta"] = recipe.accuracy(model, data.test, flip_tta=True)
    if raw_weights is not None:
        with recipe.swapped_weights(model, raw_weights):
            result["test_accuracy_raw"] = recipe.accuracy(model, data.test)
            if flips:
                result["test_accuracy_raw_flip_tta"] = recipe.accuracy(model, data.test,
                                                                       flip_tta=True)
    return result


def flip_tta_applies(info) -> bool:
    """Whether flip test-time augmentation is evaluated: where the source says a horizontal
    flip keeps its classes, or where the run trained with flips (an explicit "flip" in
    `data.augment` says so for a source that cannot know it, e.g. Fashion-MNIST's IDX files,
    which serve digits too)."""
    return bool(info.flip_invariant or info.augmentation.flip)


if __name__ == "__main__":
    common.run_main(main)
