"""Precise BN for finished classify runs: test accuracy with the moving averages and after the
batch-norm statistics are recomputed with the final weights (`keypoint_gnn.precise_bn`).

  python -m trainers.recalibrate_bn runs/classify --batches 50
  python -m trainers.recalibrate_bn runs/a --batches 50 --save

Each run directory needs model.keras and config.json (from trainers.classify). The data set
should be the run's own: --dataset / --seed / --max-examples default to what the run's
run.json records (runs given together must agree), and --batch-size should match too. The
statistics come from its training split (no augmentation), the accuracies from its test split. Prints one
JSON report; with --save, also writes the recalibrated model to RUN/model_recalibrated.keras.
`trainers.classify --set train.recalibrate_bn=N` does the same at the end of training.
"""
import json

import keypoint_gnn as kg
from keypoint_gnn import models
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset
from trainers import common


def measure(run, data, batches, save):
    for name in ("model.keras", "config.json"):
        if not (run / name).is_file():
            raise common.UserError(f"{run}: no {name} (not a trainers.classify run directory)")
    model = keras.models.load_model(run / "model.keras", custom_objects=models.custom_objects())
    model.compile(**common.classifier_loss_and_metrics())
    report = common.recalibrate_batch_norm(model, data, batches)
    loss, accuracy = model.evaluate(data.test, verbose=0)
    report.update(test_accuracy_recalibrated=float(accuracy), test_loss_recalibrated=float(loss))
    if save:
        model.save(run / "model_recalibrated.keras")
        report["saved"] = str(run / "model_recalibrated.keras")
    return report


def main(argv=None):
    parser = common.parser_for(__doc__, "recalibrate_bn")
    common.add_measured_runs_flags(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="default %(default)s")
    parser.add_argument("--batches", type=int, default=50,
                        help="training batches to average the statistics over (default 50)")
    parser.add_argument("--save", action="store_true",
                        help="write RUN/model_recalibrated.keras")
    args = parser.parse_args(argv)
    if args.batches < 1:
        raise common.UserError(f"--batches={args.batches} must be at least 1")
    config_path = args.runs[0] / "config.json"
    if not config_path.is_file():
        raise common.UserError(f"{args.runs[0]}: no config.json (not a trainers.classify run directory)")
    image_size = kg.ModelConfig.from_json(config_path.read_text()).image_size
    dataset, seed, max_examples = common.measured_data(args)
    data = load_dataset(dataset, image_size=image_size, batch_size=args.batch_size, seed=seed,
                        augment=False, max_examples=max_examples)
    report = {str(run): measure(run, data, args.batches, args.save) for run in args.runs}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    common.run_main(main)
