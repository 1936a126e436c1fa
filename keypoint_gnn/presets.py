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
    graph = {"kind": kind, "layers": layers}
    if kind == "diffpool":  # the paper's DiffPool: Spektral's (Ying et al.'s) unweighted losses
        graph["diffpool_loss_weight"] = 1.0
    return {"model": {"graph": graph,
                      "detector": {"score_activation": activation, **detector}}}


def _table_2_row(layers, keypoints, activation, kind="gcn", loss="mse"):
    row = _paper_row(layers, activation, kind, num_keypoints=keypoints)
    row["model"]["head"] = {"reconstruction_loss": loss}
    return row


def _real_data(image_size, *, widths, depths, stem_stride, tap_stride, keypoints=32,
               epochs, batch_size, learning_rate, augment, channels=None):
    """A real-data preset: a ResNet tapped at `tap_stride`, max-pool NMS keypoints read from its
    features, a 4-layer residual GCN whose grid is concatenated with the features, the later
    stages and global average pooling as the head; AdamW (weight decay 0.05), linear warm-up
    (1 epoch) then cosine decay, label smoothing 0.1. No weight EMA: on Imagenette2 (16 epochs)
    it scored 0.6-2.9 points below the raw weights, and as the raw weights once its batch-norm
    statistics were recomputed (docs/research-log.md)."""
    model = {"image_size": image_size,
             "backbone": {"kind": "resnet", "widths": list(widths), "depths": list(depths),
                          "stem_filters": widths[0], "stem_stride": stem_stride,
                          "tap_stride": tap_stride},
             "detector": {"kind": "maxpool_nms", "source": "features",
                          "num_keypoints": keypoints, "pool_size": 2},
             "graph": {"kind": "gcn", "layers": 4, "units": 64},
             "head": {"filters": [], "pooling": "average", "fuse": "concat", "dropout": 0.2}}
    data = {"augment": augment}
    if channels is not None:
        data["channels"] = channels
    return {"model": model, "data": data,
            "train": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                      "optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine",
                      "warmup_epochs": 1.0, "label_smoothing": 0.1}}


def _faces(image_size, *, keypoints, units, epochs, steps_per_epoch, batch_size,
           holdout_classes):
    """A reconstruction preset for small sets of aligned faces: a ResNet (32, 64) at full
    resolution tapped at stride 2, max-pool NMS keypoints chosen among 2x2 windows of its
    features (a quarter of the windows hold one), a 4-layer residual GCN of `units` channels
    (the graph's numbers: keypoints x units + their positions), the spreading decoder; AdamW,
    warm-up then cosine decay, epochs sized by steps, small shifts and flips;
    `holdout_classes` people kept out of training for the unseen-people test."""
    return {"model": {"image_size": image_size,
                      "backbone": {"kind": "resnet", "widths": [32, 64], "depths": [1, 1],
                                   "stem_filters": 32, "stem_stride": 1, "tap_stride": 2},
                      "detector": {"kind": "maxpool_nms", "source": "features",
                                   "num_keypoints": keypoints, "pool_size": 2},
                      "graph": {"kind": "gcn", "layers": 4, "units": units},
                      "head": {"decoder_width": 64, "decoder_spread": 4}},
            "data": {"augment": "flip,crop", "holdout_classes": holdout_classes},
            "train": {"epochs": epochs, "steps_per_epoch": steps_per_epoch,
                      "batch_size": batch_size, "learning_rate": 2e-3, "optimizer": "adamw",
                      "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 1.0}}


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
    "imagenette-64": {
        "task": "classify",
        "real_data": True,
        "description": "photos at 64 px on a CPU (Imagenette2: 8-25 min on 2 cores): "
                       "ResNet 32-256 (1.3M parameters in all), stem stride 2, tapped at "
                       "stride 4, 32 keypoints, 16 epochs of AdamW + warm-up/cosine + label "
                       "smoothing, resized crop + flip",
        "config": _real_data(64, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1),
                             stem_stride=2, tap_stride=4, epochs=16, batch_size=64,
                             learning_rate=2e-3, augment="flip,resized_crop"),
    },
    "imagenette-128": {
        "task": "classify",
        "real_data": True,
        "description": "photos at 128 px for a GPU host: ResNet-18 widths and depths (11.5M), "
                       "stem stride 2, tapped at stride 8, 64 keypoints, 20 epochs",
        "config": _real_data(128, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2),
                             stem_stride=2, tap_stride=8, keypoints=64, epochs=20,
                             batch_size=128, learning_rate=3e-3, augment="flip,resized_crop"),
    },
    "paper-size": {
        "task": "classify",
        "real_data": True,
        "description": "the paper's model size (3.3-6.5M) at 128 px for a GPU host: ResNet "
                       "44-352, 2 blocks a stage (5.5M), tapped at stride 8, 64 keypoints, "
                       "20 epochs",
        "config": _real_data(128, widths=(44, 88, 176, 352), depths=(2, 2, 2, 2),
                             stem_stride=2, tap_stride=8, keypoints=64, epochs=20,
                             batch_size=128, learning_rate=3e-3, augment="flip,resized_crop"),
    },
    "fashion-mnist": {
        "task": "classify",
        "real_data": True,
        "description": "Fashion-MNIST (idx:/usr/share/datasets/fashion-mnist) at 32 px: ResNet "
                       "32-256 (1.3M parameters in all), stem stride 1, tapped at stride 2, "
                       "32 keypoints, 12 epochs, pad-crop + flip",
        "config": _real_data(32, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1),
                             stem_stride=1, tap_stride=2, epochs=12, batch_size=128,
                             learning_rate=2e-3, augment="flip,crop", channels=1),
    },
    "cifar10": {
        "task": "classify",
        "real_data": True,
        "description": "CIFAR-10 (a prepared TFDS cifar10) at 32 px for a GPU host: ResNet-18 "
                       "widths and depths (11.4M), stem stride 1, tapped at stride 2, 64 "
                       "keypoints, 30 epochs, pad-crop + flip",
        "config": _real_data(32, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2),
                             stem_stride=1, tap_stride=2, keypoints=64, epochs=30,
                             batch_size=128, learning_rate=3e-3, augment="flip,crop"),
    },
    "faces-64": {
        "task": "reconstruct",
        "description": "faces (e.g. ORL, folder:PATH of one sub-folder per person) at 64 px: "
                       "64 keypoints of a 32x32 ResNet map, 4-layer GCN of 16 channels (1,152 "
                       "numbers a face), spreading decoder, 40 epochs of 100 steps; 4 people held "
                       "out for the unseen-people test",
        "config": _faces(64, keypoints=64, units=16, epochs=40, steps_per_epoch=100,
                         batch_size=32, holdout_classes=4),
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
