"""Train a keypoint-GNN autoencoder: `python -m trainers.reconstruct [flags]` (paper §8, Table 2).

Writes to --out: metrics.json (test MSE and PSNR on [0, 1] images), reconstructions.png
(originals, keypoints, reconstructions), curves.png, model.keras, config.json, run.json.
"""
import argparse
import pathlib
import time

import numpy as np

from trainers import common
from keypoint_gnn import build_autoencoder, metrics, models, training, viz, xla
from keypoint_gnn._backend import keras


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_data_flags(parser)
    common.add_model_flags(parser)
    common.add_training_flags(parser, default_out="runs/reconstruct", default_epochs=10)
    parser.add_argument("--loss", choices=models.RECONSTRUCTION_LOSSES, default="mse",
                        help="mse, or conf_mse (squared error weighted by the detector's scores)")
    args = parser.parse_args(argv)
    common.check_training_flags(args)
    return args


def main(argv=None):
    args = parse_args(argv)
    strategy, data, config = common.start_run(args, task="reconstruct", reconstruction_loss=args.loss)
    info = data.info
    chief = training.is_chief(strategy)
    precision = training.set_precision(args.mixed_precision)
    out = pathlib.Path(args.out)

    with strategy.scope():
        model = build_autoencoder(config)
        if args.detector_weights:
            models.detector_model(model).load_weights(args.detector_weights)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss=models.reconstruction_loss_for(config),
                      metrics=[keras.metrics.MeanSquaredError(name="mse")],
                      **xla.compile_kwargs(args.xla_mode))

    timer = training.EpochTimer()
    callbacks = training.standard_callbacks(out, "val_mse", "min", chief) + [timer]
    start = time.perf_counter()
    with xla.jit_graph_section(model, args.xla_mode):
        history = model.fit(data.train, validation_data=data.validation, epochs=args.epochs,
                            callbacks=callbacks, verbose=common.verbosity(args))
        train_seconds = time.perf_counter() - start
        evaluation = model.evaluate(data.test, verbose=0, return_dict=True)
    # Every worker takes part in reading the weights (batch-norm statistics are all-reduced).
    model = training.unreplicated(model, strategy, lambda: build_autoencoder(config))
    if not chief:
        return None

    test_images, _ = training.dataset_arrays(data.test)
    reconstructions = model.predict(test_images, verbose=0)
    test_mse = float(np.mean((reconstructions - test_images) ** 2))
    quality, pixels = training.keypoint_quality(model, config, test_images, data.test_parts)
    result = {
        "test_mse": test_mse,
        "test_psnr": metrics.psnr(test_mse),
        "test_loss": float(evaluation["loss"]),
        "loss": args.loss,
        "parameters": int(model.count_params()),
        "keypoints": quality,
        **training.run_summary(args=args, strategy=strategy, precision=precision, info=info,
                               config=config, history=history, epoch_seconds=timer.seconds,
                               train_seconds=train_seconds),
    }
    viz.draw_reconstructions(test_images[:8], pixels[:8], reconstructions[:8], out / "reconstructions.png")
    viz.plot_curves(history.history, out / "curves.png")
    model.save(out / "model.keras")
    (out / "config.json").write_text(config.to_json())
    training.write_json(out / "run.json", {"name": f"autoencoder_{config.detector}_{config.gnn}",
                                           "dataset": info.name, "class_names": info.class_names})
    training.write_json(out / "metrics.json", result)
    print(f"test MSE {test_mse:.5f} (PSNR {result['test_psnr']:.2f} dB); results in {out}")
    return result


if __name__ == "__main__":
    common.run_main(main)
