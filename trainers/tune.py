"""KerasTuner search over keypoint-gnn classifiers.

  python -m trainers.tune --tuner hyperband --dataset builtin
  python -m trainers.classify --config runs/tune/best_config.json

Searches detector, GNN (--graphs: the paper's three by default; gat and vig may be added),
graph layers, keypoints, score activation and learning rate (and, with --refinements, the
windowed detectors' detector.refinement) with Hyperband or Bayesian
optimisation on any --dataset, around the model of --preset / --config / --set; checks that
every trial COMPLETED; writes --out/best_config.json (a ModelConfig that
`trainers.classify --config` takes), --out/best_hyperparameters.json and --out/trials.json.
"""
import pathlib

from keypoint_gnn import atomic, training
from keypoint_gnn._backend import keras
from trainers import common


def parse_args(argv=None):
    parser = common.parser_for(__doc__, "tune")
    common.add_config_flags(parser, "classify", model=False, train=False)
    group = parser.add_argument_group("search")
    group.add_argument("--tuner", choices=("hyperband", "bayesian"), default="hyperband",
                       help="default %(default)s")
    group.add_argument("--max-trials", type=int, default=10,
                       help="Bayesian optimisation trials (default %(default)s)")
    group.add_argument("--epochs", type=int, default=9,
                       help="epochs per trial (Hyperband: the maximum; default %(default)s)")
    group.add_argument("--batch-size", type=int, default=64, help="default %(default)s")
    group.add_argument("--keypoints", default="16,32,64",
                       help="keypoint counts to search (default %(default)s)")
    group.add_argument("--max-graph-layers", type=int, default=9, help="default %(default)s")
    group.add_argument("--detectors", default=None,
                       help="detectors to search, comma-separated (default: attention,maxpool_nms,"
                            "grid, the paper's three; perturbed_topk may be added)")
    group.add_argument("--graphs", default=None,
                       help="graph kinds to search, comma-separated (default: gcn,diffpool,none, "
                            "the paper's; gat and vig may be added)")
    group.add_argument("--refinements", default="none",
                       help="detector.refinement values to search for the windowed detectors "
                            "(maxpool_nms, perturbed_topk), e.g. none,window,centre (default none)")
    group.add_argument("--seed", type=int, default=0, help="default %(default)s")
    group.add_argument("--out", default="runs/tune", help="default %(default)s")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2, help="default %(default)s")
    args = parser.parse_args(argv)
    for name in ("max_trials", "epochs", "batch_size", "max_graph_layers"):
        if getattr(args, name) < 1:
            raise common.UserError(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")
    try:
        args.keypoints = tuple(int(k) for k in args.keypoints.split(","))
    except ValueError:
        raise common.UserError(f"--keypoints={args.keypoints!r} must be comma-separated integers") from None
    for name in ("detectors", "graphs"):
        if getattr(args, name) is not None:
            setattr(args, name, tuple(getattr(args, name).split(",")))
    args.refinements = tuple(args.refinements.split(","))
    # The base config holds the smallest count searched; the search sets the others.
    smallest = min(args.keypoints)
    args.set = [f"detector.num_keypoints={smallest}",
                f"graph.diffpool_clusters={min(8, smallest)}"] + args.set
    return args


def main(argv=None):
    args = parse_args(argv)
    from keypoint_gnn import tuning  # imports keras_tuner (slow) only when a search runs

    run = common.run_config(args, "classify")
    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out)
    data = common.load_data(run.replace(train=run.train.replace(batch_size=args.batch_size)),
                            args.seed)
    info = data.info
    try:
        base = run.model.with_data(image_size=info.image_size, channels=info.channels,
                                   num_classes=info.num_classes)
    except ValueError as error:
        raise common.UserError(f"--keypoints {min(args.keypoints)} does not fit: {error}") from None
    hypermodel = tuning.KeypointHyperModel(base, args.keypoints, args.max_graph_layers,
                                           detectors=args.detectors or tuning.SEARCHED_DETECTORS,
                                           refinements=args.refinements,
                                           graphs=args.graphs or tuning.SEARCHED_GRAPHS)
    tuner = tuning.make_tuner(args.tuner, hypermodel, out, "search", args.max_trials, args.epochs, args.seed)
    tuner.search(data.train, validation_data=data.validation, epochs=args.epochs,
                 verbose=args.verbose, callbacks=[keras.callbacks.TerminateOnNaN()])
    statuses = tuning.check_trials(tuner)

    best_hp = tuner.get_best_hyperparameters(1)[0]
    best_config = hypermodel.config(best_hp)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    atomic.write_text(out / "best_config.json", best_config.to_json())
    atomic.write_json(out / "best_hyperparameters.json",
                      {"values": best_hp.values, "val_accuracy": best_trial.score,
                       "command": training.command_line()})
    atomic.write_json(out / "trials.json", {
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
