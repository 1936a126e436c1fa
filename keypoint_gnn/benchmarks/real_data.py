"""Training steps of the real-data presets, each against its matched plain network.

For each preset of `keypoint_gnn.presets.real_data_presets()` (or the names given): the
keypoint classifier the preset describes and `build_plain_cnn(config, keypoint.count_params())`,
a plain CNN with as many parameters, each compiled with the preset's own recipe (optimizer,
schedule, EMA, label smoothing; `keypoint_gnn.recipe`), train on the same random batch of the
preset's batch size and image size, their `train_on_batch` steps interleaved in one group per
preset (`measure.time_group`). The ratio keypoint / plain is the issue-21 goal (<= 1.3x); on a
GPU the same pair runs in mixed float16 as well.

Data loading and augmentation are not in the step: both models see the same fixed batch.
"""
import dataclasses

import numpy as np

from keypoint_gnn import presets, recipe
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.benchmarks import machine, measure
from keypoint_gnn.models import build_classifier, build_plain_cnn
from keypoint_gnn.run_config import resolve

ROLES = ("keypoint", "plain")
# Optimizer steps per epoch assumed by the recipe's schedule: only its shape, not its cost.
STEPS_PER_EPOCH = 100
# Classes of the data sets the real-data presets are made for (Imagenette2, Fashion-MNIST,
# CIFAR-10): the model a preset trains is fitted to its data, so the benchmark builds it so too.
PRESET_CLASSES = 10


def preset_run(name, image_size=None, batch=None, graph=None):
    """The preset's RunConfig, with the image size, the batch size and fields of its graph
    section (`graph`: {field: value}, e.g. {"kind": "vig", "units": 40}) replaced when given;
    a real-data preset's model fitted, as training would fit it, to the data the preset is made
    for: the preset's `data.channels` (RGB where it sets none) and `PRESET_CLASSES` classes
    (other presets keep the model's defaults, the built-in set's)."""
    overrides = {f"model.graph.{field}": value for field, value in (graph or {}).items()}
    if image_size is not None:
        overrides["model.image_size"] = image_size
    if batch is not None:
        overrides["train.batch_size"] = batch
    run = resolve(preset=presets.preset(name, "classify"), flags=overrides)
    if name not in presets.real_data_presets():
        return run
    model = run.model.with_data(image_size=run.model.image_size,
                                channels=run.data.channels or 3, num_classes=PRESET_CLASSES)
    return dataclasses.replace(run, model=model)


def _build(role, model_config, target_params, precision):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        if role == "keypoint":
            return build_classifier(model_config)
        return build_plain_cnn(model_config, target_params=target_params)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def setup_preset_step(preset, role, image_size=None, batch=None, precision="float32",
                      target_params=None, seed=0):
    """(call, info): one `train_on_batch` step of the preset's keypoint model or of its matched
    plain CNN (`target_params` parameters), compiled with the preset's recipe."""
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not one of {ROLES}")
    run = preset_run(preset, image_size, batch)
    keras.utils.set_random_seed(seed)
    model = _build(role, run.model, target_params, precision)
    return train_step(model, run, seed)


def train_step(model, run, seed=0):
    """(call, info): one `train_on_batch` step of `model`, compiled with the recipe of `run` (a
    RunConfig), on a fixed random batch (of `seed`) of the run's batch size and image size."""
    config = run.model
    model.compile(optimizer=recipe.optimizer(run.train, STEPS_PER_EPOCH),
                  **recipe.classification_loss(run.train))
    rng = np.random.default_rng(seed)
    size, batch_size = config.image_size, run.train.batch_size
    images = tf.constant(rng.random((batch_size, size, size, config.channels), dtype=np.float32))
    labels = tf.constant(rng.integers(0, config.num_classes, batch_size))
    return (lambda: model.train_on_batch(images, labels)), {
        "parameters": model.count_params(), "batch": batch_size, "image_size": size}


def benchmark_presets(*, warmup, repeats, names=None, image_size=None, batch=None, gpu=None):
    """Each preset's keypoint step against its matched plain CNN's, interleaved.

    Args:
      names: preset names; None: `presets.real_data_presets()`.
      image_size, batch: replace the presets' own (small values for tests and smoke runs).

    Returns:
      {"presets": {name: {"image_size", "batch", "groups": {precision: time_group}, "cases":
      {precision: {"keypoint": {...}, "plain": {...}, "ratio": paired ratio keypoint / plain}}}}
      | {"error": message}}, "precisions", "aa_flag", "gpu", "notes"}.
    """
    names = presets.real_data_presets() if names is None else list(names)
    gpu = machine.has_gpu() if gpu is None else gpu
    precisions = ["float32"] + (["mixed_float16"] if gpu else [])
    notes = ["train_on_batch on one fixed random batch (no data loading or augmentation), each "
             "model with its preset's recipe; plain = build_plain_cnn matched to the keypoint "
             "model's parameter count"]
    if not names:
        notes.append("no real-data presets are defined (keypoint_gnn.presets.real_data_presets)")
    if not gpu:
        notes.append("no GPU detected: mixed precision skipped")
    results = {}
    for name in names:
        try:
            run = preset_run(name, image_size, batch)
        except ValueError as error:
            results[name] = {"error": str(error)}
            continue
        entry = {"image_size": run.model.image_size, "batch": run.train.batch_size,
                 "groups": {}, "cases": {}}
        for precision in precisions:
            keypoint_step, keypoint_info = setup_preset_step(name, "keypoint", image_size, batch,
                                                             precision)
            plain_step, plain_info = setup_preset_step(
                name, "plain", image_size, batch, precision,
                target_params=keypoint_info["parameters"])
            group = measure.time_group({"keypoint": keypoint_step, "plain": plain_step}, warmup,
                                       repeats, label=f"preset {name} {precision}", aa="plain")
            cases = {}
            for role, info in (("keypoint", keypoint_info), ("plain", plain_info)):
                timing = {k: v for k, v in group["timings"][role].items() if k != "rounds_ms"}
                cases[role] = {**info, **timing,
                               "images_per_second": info["batch"] / (timing["median_ms"] / 1e3)}
            cases["ratio"] = measure.group_ratio(group, "keypoint", "plain")
            entry["groups"][precision] = group
            entry["cases"][precision] = cases
        results[name] = entry
    aa_flag = any(group["aa_flag"] for entry in results.values()
                  for group in entry.get("groups", {}).values())
    return {"presets": results, "precisions": precisions, "aa_flag": aa_flag, "gpu": gpu,
            "notes": notes}
