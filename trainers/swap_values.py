"""Swap values of finished classify runs: how well the feature blend's linearised gradient
predicts the real loss change of swapping a keypoint (`keypoint_gnn.swap_values`).

  python -m trainers.swap_values runs/k16_feat_s0 runs/k16_feat_s3 --images 32
  python -m trainers.swap_values runs/k16_feat_s0 --untrained

Each run directory needs config.json and (unless --untrained) model.keras from
trainers.classify, with a detector that picks N of n candidate locations (attention,
maxpool_nms, perturbed_topk). The first --images test images of the run's own split
(--dataset / --seed / --max-examples default to its run.json) are measured: every swap of a
selected keypoint for an unselected candidate. `--untrained` measures a freshly initialised
model of the run's config instead (seeded with the run's seed: the initial weights'
distribution, not necessarily the draw training started from, since data loading may use the
random stream first). Prints one JSON report per run (`swap_values.summarize`).
"""
import argparse
import json

import numpy as np

import keypoint_gnn as kg
from keypoint_gnn import models
from keypoint_gnn import swap_values as swaps
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset
from trainers import common


def load_model(run, untrained):
    if not (run / "config.json").is_file():
        raise common.UserError(f"{run}: no config.json (not a trainers.classify run directory)")
    config = kg.ModelConfig.from_json((run / "config.json").read_text())
    swaps.check_swap_config(config)
    if untrained:
        keras.utils.set_random_seed(common.read_run_json(run).get("seed", 0))
        return kg.build_classifier(config), config
    if not (run / "model.keras").is_file():
        raise common.UserError(f"{run}: no model.keras (training did not finish?); "
                               "--untrained measures the initial model instead")
    return keras.models.load_model(run / "model.keras",
                                   custom_objects=models.custom_objects()), config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_measured_runs_flags(parser)
    parser.add_argument("--images", type=int, default=16, help="test images to measure (default 16)")
    parser.add_argument("--untrained", action="store_true",
                        help="measure a freshly initialised model of each run's config")
    args = parser.parse_args(argv)
    if args.images < 1:
        raise common.UserError(f"--images {args.images} must be at least 1")
    loaded = {run: load_model(run, args.untrained) for run in args.runs}
    dataset, seed, max_examples = common.measured_data(args)
    image_size = next(iter(loaded.values()))[1].image_size
    data = load_dataset(dataset, image_size=image_size, seed=seed, augment=False,
                        max_examples=max_examples)
    images, labels = [], []
    for x, y in data.test:
        images.append(x.numpy())
        labels.append(y.numpy())
        if sum(map(len, images)) >= args.images:
            break
    images = np.concatenate(images)[:args.images]
    labels = np.concatenate(labels)[:args.images]
    report = {}
    for run, (model, config) in loaded.items():
        if config.image_size != image_size:
            raise common.UserError(f"{run}: image_size {config.image_size} differs from the first "
                                   f"run's {image_size}; measure them separately")
        report[str(run)] = {"detector": config.detector, "untrained": args.untrained,
                            **swaps.summarize(swaps.swap_values(model, config, images, labels))}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    common.run_main(main)
