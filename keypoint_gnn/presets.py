"""Named model and training settings, as data: `--preset NAME` in every trainer.

Each preset is a task ("classify", "reconstruct" or "any"), a one-line description and the RunConfig
fields it sets (nested dicts; see `keypoint_gnn.run_config`). Fields a preset leaves out keep
the trainer's defaults, and flags or `--set` override a preset. The paper's presets set only
what the paper's rows vary (graph, score activation, loss, keypoints for Table 2); the data
set, image size and epochs come from the command line. Measured figures for each preset are in
README.md and docs/RESULTS.md, produced by the commands given there.
"""
from keypoint_gnn.sections import ConfigError


def _paper_row(layers, activation, kind="gcn", **detector):
    return {"model": {"graph": {"kind": kind, "layers": layers},
                      "detector": {"score_activation": activation, **detector}}}


def _table_2_row(layers, keypoints, activation, kind="gcn", loss="mse"):
    row = _paper_row(layers, activation, kind, num_keypoints=keypoints)
    row["model"]["head"] = {"reconstruction_loss": loss}
    return row


PRESETS = {
    "default": {
        "task": "any",
        "description": "max-pool NMS, 32 keypoints, 4-layer residual GCN, sigmoid scores "
                       "(every trainer's default; the demo)",
        "config": {},
    },
    "accurate": {
        "task": "classify",
        "description": "the default with each keypoint at its NMS window's centre: the most "
                       "accurate configuration on the figures (at par with perturbed-topk, "
                       "and simpler)",
        "config": {"model": {"detector": {"refinement": "centre"}}},
    },
    "perturbed-topk": {
        "task": "classify",
        "description": "differentiable top-N (threshold estimator, sigma 0.5) over the NMS "
                       "windows, keypoints at the windows' centres",
        "config": {"model": {"detector": {"kind": "perturbed_topk", "refinement": "centre",
                                          "perturbed_estimator": "threshold",
                                          "perturbed_sigma": 0.5}}},
    },
    "paper-t1-cnn-only": {
        "task": "classify",
        "description": "paper Table 1 row 1: keypoints and CNNs, no GNN, linear scores",
        "config": _paper_row(4, "linear", kind="none"),
    },
    "paper-t1-gcn4": {
        "task": "classify",
        "description": "paper Table 1 row 2: 4 GCN layers, linear scores",
        "config": _paper_row(4, "linear"),
    },
    "paper-t1-gcn4-sigmoid": {
        "task": "classify",
        "description": "paper Table 1 row 3: 4 GCN layers, sigmoid scores",
        "config": _paper_row(4, "sigmoid"),
    },
    "paper-t1-gcn5": {
        "task": "classify",
        "description": "paper Table 1 row 4: 5 GCN layers, linear scores",
        "config": _paper_row(5, "linear"),
    },
    "paper-t1-gcn5-sigmoid": {
        "task": "classify",
        "description": "paper Table 1 row 5: 5 GCN layers, sigmoid scores",
        "config": _paper_row(5, "sigmoid"),
    },
    "paper-t1-diffpool": {
        "task": "classify",
        "description": "paper Table 1 DiffPool row: DiffPool + 1 coarse GCN layer, linear scores",
        "config": _paper_row(2, "linear", kind="diffpool"),
    },
    "paper-t1-diffpool-sigmoid": {
        "task": "classify",
        "description": "paper Table 1 DiffPool row with sigmoid scores",
        "config": _paper_row(2, "sigmoid", kind="diffpool"),
    },
    "paper-t2-gcn5-48kp": {
        "task": "reconstruct",
        "description": "paper Table 2 row 1: 5 GCN layers, 48 keypoints, linear scores, MSE",
        "config": _table_2_row(5, 48, "linear"),
    },
    "paper-t2-gcn5-64kp": {
        "task": "reconstruct",
        "description": "paper Table 2 row 2: 5 GCN layers, 64 keypoints, linear scores, MSE",
        "config": _table_2_row(5, 64, "linear"),
    },
    "paper-t2-gcn9-64kp": {
        "task": "reconstruct",
        "description": "paper Table 2 row 3: 9 GCN layers, 64 keypoints, linear scores, MSE",
        "config": _table_2_row(9, 64, "linear"),
    },
    "paper-t2-gcn5-64kp-sigmoid": {
        "task": "reconstruct",
        "description": "paper Table 2 row 4: 5 GCN layers, 64 keypoints, sigmoid scores, MSE",
        "config": _table_2_row(5, 64, "sigmoid"),
    },
    "paper-t2-diffpool-64kp": {
        "task": "reconstruct",
        "description": "paper Table 2 DiffPool row: 64 keypoints, linear scores, MSE",
        "config": _table_2_row(2, 64, "linear", kind="diffpool"),
    },
    "paper-t2-gcn5-64kp-conf-mse": {
        "task": "reconstruct",
        "description": "paper Table 2 conf-MSE row: 5 GCN layers, 64 keypoints, linear scores",
        "config": _table_2_row(5, 64, "linear", loss="conf_mse"),
    },
    "paper-t2-gcn5-64kp-sigmoid-conf-mse": {
        "task": "reconstruct",
        "description": "paper Table 2 conf-MSE row with sigmoid scores",
        "config": _table_2_row(5, 64, "sigmoid", loss="conf_mse"),
    },
}


def real_data_presets():
    """Names of the presets made for real photos or scans (entries with "real_data": True):
    `trainers.benchmark presets` times their training steps against their matched plain
    networks."""
    return [name for name, entry in PRESETS.items() if entry.get("real_data")]


def _fits(entry, task):
    return task is None or entry["task"] in (task, "any")


def preset(name, task=None):
    """The RunConfig fields (nested dict) of preset `name`; ConfigError naming the valid
    presets (of `task`, when given) for an unknown one or one of another task."""
    valid = [key for key, entry in PRESETS.items() if _fits(entry, task)]
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r} is not a preset; valid: {', '.join(valid)}")
    entry = PRESETS[name]
    if not _fits(entry, task):
        raise ConfigError(f"--preset {name!r} is a {entry['task']} preset; this trainer "
                          f"({task}) takes: {', '.join(valid)}")
    return entry["config"]


def describe(task=None):
    """One line per preset (of `task`, when given): name and description."""
    names = [key for key, entry in PRESETS.items() if _fits(entry, task)]
    width = max(map(len, names))
    return "\n".join(f"{name:<{width}}  {PRESETS[name]['description']}" for name in names)
