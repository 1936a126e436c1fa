"""Train a keypoint-GNN autoencoder (paper §8, Table 2).

  python -m trainers.reconstruct --preset faces-64 --dataset folder:../shared/data/att_faces
  python -m trainers.reconstruct --preset faces-64 --dataset folder:PATH --plain-autoencoder
  python -m trainers.reconstruct --preset paper-t2-gcn5-64kp --loss conf_mse

Writes to --out: metrics.json (test MSE, PSNR and SSIM on [0, 1] images; with
data.holdout_classes, the same for the held-out classes' images; the references of the same
split: the mean training image and PCA with as many components as the graph holds numbers),
reconstructions.png (test images, their keypoints, reconstructions), curves.png, model.keras,
config.json, run.json. --plain-autoencoder trains the convolutional autoencoder whose
bottleneck holds at least as many numbers as the keypoint graph, the model a user would pick
instead; --plain-autoencoder at-most gives it no more numbers than the graph.
"""
import pathlib

import numpy as np

from keypoint_gnn import (
    atomic,
    build_autoencoder,
    build_plain_autoencoder,
    models,
    recipe,
    rules,
    training,
    viz,
    xla,
)
from keypoint_gnn._backend import keras
from keypoint_gnn.data import pipeline_images_per_second
from keypoint_gnn.reconstruction_references import image_quality, reference_report
from trainers import common

DEFAULTS = {"train": {"epochs": 10}}
PIPELINE_BATCHES = 20


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "reconstruct")
    common.add_config_flags(parser, "reconstruct")
    group = parser.add_argument_group("autoencoder")
    group.add_argument("--loss", choices=rules.RECONSTRUCTION_LOSSES,
                       help="mse (default), or conf_mse: squared error weighted by the detector's "
                            "scores (sets head.reconstruction_loss)")
    common.add_shortcuts(parser, "loss")
    group.add_argument("--plain-autoencoder", nargs="?", const="at-least", default=None,
                       choices=models.PLAIN_BOTTLENECKS,
                       help="train the convolutional autoencoder (the reference), not the keypoint "
                            "model; its bottleneck holds at least (default) or at most as many "
                            "numbers as the keypoint graph")
    group.add_argument("--detector-weights", help="pre-trained detector weights "
                       "(detector.weights.h5 from trainers.pretrain_keypoints)")
    common.add_runtime_flags(parser, default_out="runs/reconstruct")
    return parser.parse_args(argv)


def check(args):
    def check_run(run):
        if args.plain_autoencoder and run.model.head.reconstruction_loss != "mse":
            raise common.UserError(
                f"--plain-autoencoder trains on mse; head.reconstruction_loss="
                f"{run.model.head.reconstruction_loss!r} needs the keypoint detector's scores")
        if args.plain_autoencoder and args.detector_weights:
            raise common.UserError("--detector-weights: the plain autoencoder has no detector")
        try:
            models._check_autoencoder(run.model)
            if args.plain_autoencoder:  # before the run directory exists
                models.plain_bottleneck_channels(
                    run.model.feature_size, models.graph_numbers(build_autoencoder(run.model)),
                    args.plain_autoencoder)
        except ValueError as error:
            raise common.UserError(str(error)) from None
    return check_run


def main(argv=None):
    args = parse_args(argv)
    strategy, data, run, run_dir = common.start_run(args, "reconstruct", DEFAULTS,
                                                    check=check(args))
    with run_dir:
        return train(args, strategy, data, run, run_dir)


def build_model(config, plain, numbers):
    """The keypoint autoencoder, or (plain: "at-least" or "at-most") the conv autoencoder
    sized against its graph's `numbers`."""
    if not plain:
        return build_autoencoder(config)
    return build_plain_autoencoder(config, numbers, plain)


def train(args, strategy, data, run, run_dir):
    config, info = run.model, data.info
    chief = training.is_chief(strategy)
    precision = training.set_precision(args.mixed_precision)
    out = pathlib.Path(args.out)
    steps = recipe.epoch_steps(run.train, info.num_examples["train"])
    # The plain autoencoder is sized against the keypoint graph: built first, as before.
    numbers = (models.graph_numbers(build_autoencoder(config)) if args.plain_autoencoder
               else None)

    with strategy.scope():
        model = build_model(config, args.plain_autoencoder, numbers)
        if numbers is None:
            numbers = models.graph_numbers(model)
        if args.detector_weights:
            models.detector_model(model).load_weights(args.detector_weights)
        model.compile(optimizer=recipe.optimizer(run.train, steps),
                      loss="mse" if args.plain_autoencoder else models.reconstruction_loss_for(config),
                      metrics=[keras.metrics.MeanSquaredError(name="mse")],
                      **xla.compile_kwargs(args.xla_mode))

    epoch_log = run_dir.epoch_log()
    callbacks = [epoch_log] + training.standard_callbacks(out, "val_mse", "min", chief)
    with xla.jit_graph_section(model, args.xla_mode):
        train_seconds, _ = training.fit_or_restore(
            model, run_dir, lambda: model.fit(
                recipe.epoch_data(run.train, data.train), validation_data=data.validation,
                epochs=run.train.epochs, steps_per_epoch=run.train.steps_per_epoch,
                callbacks=callbacks, verbose=common.verbosity(args)),
            strategy)
        evaluation = model.evaluate(data.test, verbose=0, return_dict=True)
    model = training.unreplicated(model, strategy,
                                  lambda: build_model(config, args.plain_autoencoder, numbers))
    if not chief:
        return None
    pipeline = pipeline_images_per_second(data.train, batches=min(PIPELINE_BATCHES, steps))

    test_images, _ = training.dataset_arrays(data.test)
    reconstructions = model.predict(test_images, verbose=0)
    quality = image_quality(test_images, reconstructions)
    train_images = _plain_training_images(run, args.seed)
    result = {
        "test_mse": quality["mse"],
        "test_psnr": quality["psnr"],
        "test_ssim": quality["ssim"],
        "test_loss": float(evaluation["loss"]),
        "loss": "mse" if args.plain_autoencoder else config.head.reconstruction_loss,
        "architecture": "plain_autoencoder" if args.plain_autoencoder else "keypoint_gnn",
        "parameters": int(model.count_params()),
        "graph_numbers": numbers,
        "pipeline_images_per_second": pipeline["images_per_second"],
        **training.run_summary(args=args, strategy=strategy, precision=precision, info=info,
                               run=run, run_dir=run_dir, epoch_log=epoch_log,
                               train_seconds=train_seconds),
    }
    if args.plain_autoencoder:
        result["bottleneck"] = args.plain_autoencoder
        result["bottleneck_numbers"] = int(np.prod(model.get_layer("bottleneck").output_shape[1:]))
    reference_images = {"test": test_images}
    unseen = getattr(data, "test_unseen", None)
    if unseen is not None:
        unseen_images, _ = training.dataset_arrays(unseen)
        unseen_quality = image_quality(unseen_images, model.predict(unseen_images, verbose=0))
        result.update({f"test_unseen_{key}": value for key, value in unseen_quality.items()})
        reference_images["test_unseen"] = unseen_images
        result["holdout_classes"] = list(info.holdout_classes)
    result["references"] = reference_report(train_images, reference_images, numbers)
    common.refuse_diverged(model, evaluation["loss"], result, out)
    if args.plain_autoencoder:
        pixels = np.zeros((len(test_images), 0, 2), np.float32)
    else:
        result["keypoints"], pixels = training.keypoint_quality(model, config, test_images,
                                                                data.test_parts)
    viz.draw_reconstructions(test_images[:8], pixels[:8], reconstructions[:8],
                             out / "reconstructions.png")
    viz.plot_curves(result["history"], out / "curves.png")
    name = ("plain_autoencoder" if args.plain_autoencoder
            else models.model_name(config).replace("keypoint", "autoencoder"))
    common.save_run(out, model, run, info, name, args)
    atomic.write_json(out / "metrics.json", result)
    reference = result["references"]["test"]
    print(f"test MSE {quality['mse']:.5f} (PSNR {quality['psnr']:.2f} dB, SSIM "
          f"{quality['ssim']:.3f}); mean image {reference['mean_image']['mse']:.5f}, PCA "
          f"{reference['pca']['mse']:.5f}; results in {out}")
    return result


def _plain_training_images(run, seed):
    """The training split's images without augmentation, for the mean-image and PCA
    references."""
    plain = common.load_data(run, seed, "reconstruct", augment="none")
    images, _ = training.dataset_arrays(plain.train)
    return images


if __name__ == "__main__":
    common.run_main(main)
