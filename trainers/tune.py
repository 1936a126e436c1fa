"""KerasTuner search over keypoint-gnn classifiers: `python -m trainers.tune [flags]`.

Searches detector, GNN, graph layers, keypoints, score activation and learning rate (and,
with --refinements, the windowed detectors' --subpixel-refinement) with Hyperband or Bayesian
optimisation on any --dataset; checks that every trial COMPLETED; writes
--out/best_config.json (a ModelConfig that `trainers.classify --config` takes),
--out/best_hyperparameters.json and --out/trials.json.
"""
import argparse
import pathlib

from trainers import common
from keypoint_gnn import ModelConfig, training
from keypoint_gnn._backend import keras
from keypoint_gnn.data import load_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_data_flags(parser)
    parser.add_argument("--tuner", choices=("hyperband", "bayesian"), default="hyperband")
    parser.add_argument("--max-trials", type=int, default=10, help="Bayesian optimisation trials")
    parser.add_argument("--epochs", type=int, default=9, help="epochs per trial (Hyperband: the maximum)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keypoints", default="16,32,64", help="keypoint counts to search")
    parser.add_argument("--max-graph-layers", type=int, default=9)
    parser.add_argument("--detectors", default=None,
                        help="detectors to search, comma-separated (default: attention,maxpool_nms,grid, the paper's three; "
                             "perturbed_topk may be added)")
    parser.add_argument("--refinements", default="none",
                        help="--subpixel-refinement values to search for the windowed detectors "
                             "(maxpool_nms, perturbed_topk), comma-separated, e.g. none,window,centre")
    parser.add_argument("--out", default="runs/tune")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    for name in ("max_trials", "epochs", "batch_size", "max_graph_layers"):
        if getattr(args, name) < 1:
            raise common.UserError(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")
    try:
        args.keypoints = tuple(int(k) for k in args.keypoints.split(","))
    except ValueError:
        raise common.UserError(f"--keypoints={args.keypoints!r} must be comma-separated integers") from None
    if args.detectors is not None:
        args.detectors = tuple(args.detectors.split(","))
    args.refinements = tuple(args.refinements.split(","))
    return args


def main(argv=None):
    args = parse_args(argv)
    from keypoint_gnn import tuning  # imports keras_tuner (slow) only when a search runs

    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out)
    data = load_dataset(args.dataset, image_size=args.image_size or 48, batch_size=args.batch_size,
                        seed=args.seed, data_dir=args.data_dir, channels=args.channels,
                        augment=args.augment, max_examples=args.max_examples)
    info = data.info
    smallest = min(args.keypoints)
    try:
        base = ModelConfig(image_size=info.image_size, channels=info.channels, num_classes=info.num_classes,
                           num_keypoints=smallest, diffpool_clusters=min(8, smallest))
    except ValueError as error:
        raise common.UserError(f"--keypoints {smallest} does not fit: {error}") from None
    hypermodel = tuning.KeypointHyperModel(base, args.keypoints, args.max_graph_layers,
                                           detectors=args.detectors or tuning.SEARCHED_DETECTORS,
                                           refinements=args.refinements)
    tuner = tuning.make_tuner(args.tuner, hypermodel, out, "search", args.max_trials, args.epochs, args.seed)
    tuner.search(data.train, validation_data=data.validation, epochs=args.epochs,
                 verbose=args.verbose, callbacks=[keras.callbacks.TerminateOnNaN()])
    statuses = tuning.check_trials(tuner)

    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_config = hypermodel.config(best_hp)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    (out / "best_config.json").write_text(best_config.to_json())
    training.write_json(out / "best_hyperparameters.json",
                        {"values": best_hp.values, "val_accuracy": best_trial.score,
                         "command": training.command_line()})
    training.write_json(out / "trials.json", {
        trial_id: {"status": status, "score": tuner.oracle.trials[trial_id].score,
                   "values": tuner.oracle.trials[trial_id].hyperparameters.values}
        for trial_id, status in statuses.items()})
    print(f"{len(statuses)} trials completed; best val_accuracy {best_trial.score:.4f} with "
          f"{best_hp.values}; config in {out / 'best_config.json'} "
          f"(train it: python -m trainers.classify --config {out / 'best_config.json'} "
          f"--learning-rate {best_hp.values['learning_rate']:.2g})")
    return {"statuses": statuses, "best_config": best_config, "best_score": best_trial.score}


if __name__ == "__main__":
    common.run_main(main)
