"""Train a keypoint-GNN autoencoder (paper §8, Table 2).

  python -m trainers.reconstruct --dataset folder:../shared/data/att_faces --image-size 64
  python -m trainers.reconstruct --preset paper-t2-gcn5-64kp --loss conf_mse

Writes to --out: metrics.json (test MSE and PSNR on [0, 1] images), reconstructions.png
(originals, keypoints, reconstructions), curves.png, model.keras, config.json, run.json.
"""
import pathlib
import time

import numpy as np

from keypoint_gnn import build_autoencoder, metrics, models, rules, training, viz, xla
from keypoint_gnn._backend import keras
from trainers import common

DEFAULTS = {"train": {"epochs": 10}}


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "reconstruct")
    common.add_config_flags(parser, "reconstruct")
    group = parser.add_argument_group("autoencoder")
    group.add_argument("--loss", choices=rules.RECONSTRUCTION_LOSSES,
                       help="mse (default), or conf_mse: squared error weighted by the detector's "
                            "scores (sets head.reconstruction_loss)")
    common.add_shortcuts(parser, "loss")
    group.add_argument("--detector-weights", help="pre-trained detector weights "
                       "(detector.weights.h5 from trainers.pretrain_keypoints)")
    common.add_runtime_flags(parser, default_out="runs/reconstruct")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    strategy, data, run, run_dir = common.start_run(args, "reconstruct", DEFAULTS)
    with run_dir:
        return train(args, strategy, data, run, run_dir)


def train(args, strategy, data, run, run_dir):
    config, info = run.model, data.info
    chief = training.is_chief(strategy)
    precision = training.set_precision(args.mixed_precision)
    out = pathlib.Path(args.out)

    with strategy.scope():
        model = build_autoencoder(config)
        if args.detector_weights:
            models.detector_model(model).load_weights(args.detector_weights)
        model.compile(optimizer=keras.optimizers.Adam(run.train.learning_rate),
                      loss=models.reconstruction_loss_for(config),
                      metrics=[keras.metrics.MeanSquaredError(name="mse")],
                      **xla.compile_kwargs(args.xla_mode))

    epoch_log = run_dir.epoch_log()
    callbacks = [epoch_log] + training.standard_callbacks(out, "val_mse", "min", chief)
    start = time.perf_counter()
    with xla.jit_graph_section(model, args.xla_mode):
        model.fit(data.train, validation_data=data.validation, epochs=run.train.epochs,
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
        "loss": config.head.reconstruction_loss,
        "parameters": int(model.count_params()),
        "keypoints": quality,
        **training.run_summary(args=args, strategy=strategy, precision=precision, info=info,
                               run=run, run_dir=run_dir, epoch_log=epoch_log,
                               train_seconds=train_seconds),
    }
    common.refuse_diverged(model, evaluation["loss"], result, out)
    viz.draw_reconstructions(test_images[:8], pixels[:8], reconstructions[:8], out / "reconstructions.png")
    viz.plot_curves(result["history"], out / "curves.png")
    common.save_run(out, model, run, info, models.model_name(config).replace("keypoint", "autoencoder"),
                    args)
    training.write_json(out / "metrics.json", result)
    print(f"test MSE {test_mse:.5f} (PSNR {result['test_psnr']:.2f} dB); results in {out}")
    return result


if __name__ == "__main__":
    common.run_main(main)
