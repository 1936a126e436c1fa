"""Border fraction of the grid regressor's selected keypoints, per pre-training or classify run.

  python -m trainers.pretrain_keypoints --offset-mode MODE --epochs 3 --max-examples 1500 \
      --out runs/pre_MODE
  python -m trainers.border_fraction runs/pre_sigmoid runs/pre_softmax runs/pre_dsnt \
      --max-examples 1500

For each run directory (config.json + detector.weights.h5 from trainers.pretrain_keypoints)
it rebuilds the pre-trainer, predicts the cells of the same test split, keeps the N most
confident points per image (as the detector does) and reports, over those keypoints:
`border_fraction` (margin 0.1 of the cell side; SIFT targets give about 0.4, uniform offsets
0.36), the same at margin 0.02, the offsets' standard deviation, and the mean Euclidean error
(cell units) of every slot that holds a SIFT target, and how much the cells depend on the image
(`training.input_dependence`, as for classify runs below).

A `trainers.classify` run directory (model.keras + config.json) gets the classifier's measures
instead, on the test split of --dataset / --seed / --max-examples (default: the run's own, from
its run.json; pre-training runs: builtin / 0 / all): for every detector the
share of keypoints at its N most frequent positions (`metrics.fixed_position_share`, 1-pixel
bins; 1 = the same keypoints in every image), and for the grid regressor its offset measures
(`training.offset_quality`: the selected keypoints' border fraction, that of every point
slot, and with widened offsets the range-end fraction) and how much they depend on the image
(`training.input_dependence`: the share of selected slots that an image of uniform noise
selects too, and the offsets' spread across images against that across slots):

  python -m trainers.border_fraction runs/classify_grid
"""
import argparse
import json

import numpy as np

import keypoint_gnn as kg
from keypoint_gnn import metrics, models, training
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset
from keypoint_gnn.keypoint_targets import cell_targets, pretraining_cell_size
from trainers import common


def measure_classifier(run, images):
    config = kg.ModelConfig.from_json((run / "config.json").read_text())
    model = keras.models.load_model(run / "model.keras", custom_objects=models.custom_objects())
    keypoints, _ = training.keypoint_quality(model, config, images)
    report = {"detector": config.detector,
              "fixed_position_share": keypoints["fixed_position_share"]}
    if config.detector == "grid":
        quality, _ = training.offset_quality(model, config, images)
        report.update(offset_mode=config.offset_mode, **quality,
                      **training.input_dependence(model, config, images))
    return report


def measure(run, images, method):
    if (run / "model.keras").is_file():
        return measure_classifier(run, images)
    config = kg.ModelConfig.from_json((run / "config.json").read_text())
    pretrainer = kg.build_keypoint_pretrainer(config)
    models.detector_model(pretrainer).load_weights(run / "detector.weights.h5")
    cells = pretrainer.predict(images, batch_size=128, verbose=0)
    offsets = training.most_confident_offsets(cells, config.num_keypoints)
    targets = cell_targets(images, pretraining_cell_size(config), config.grid_points_per_cell, method)
    present = targets[..., 2] > 0
    error = np.linalg.norm(cells[..., :2][present] - targets[..., :2][present], axis=-1)
    return {
        "offset_mode": config.offset_mode,
        "border_fraction": metrics.border_fraction(metrics.in_cell_offsets(offsets), margin=0.1),
        "border_fraction_margin_0.02": metrics.border_fraction(metrics.in_cell_offsets(offsets),
                                                               margin=0.02),
        "offset_std": float(offsets.std()),
        "target_offset_error": float(error.mean()),
        "target_border_fraction": metrics.border_fraction(targets[..., :2][present], margin=0.1),
        **training.input_dependence(pretrainer, config, images),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_measured_runs_flags(parser)
    parser.add_argument("--method", default="sift")
    args = parser.parse_args(argv)
    image_size = kg.ModelConfig.from_json((args.runs[0] / "config.json").read_text()).image_size
    dataset, seed, max_examples = common.measured_data(args)
    data = load_dataset(dataset, image_size=image_size, seed=seed, augment=False,
                        max_examples=max_examples)
    images = np.concatenate([x.numpy() for x, _ in data.test])
    report = {str(run): measure(run, images, args.method) for run in args.runs}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
