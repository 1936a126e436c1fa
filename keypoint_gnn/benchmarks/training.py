"""Seconds per training step: each keypoint model vs a plain CNN with as many parameters.

All models train on the same batch, in one process, their steps interleaved (see `measure`),
under each XLA mode of `keypoint_gnn.xla` ("off"; "graph": only the keypoint and graph layers
compiled; "step": `compile(jit_compile=True)`); `train_on_batch` returns host values, so every
timed step has finished. Every ratio is between two steps of that one group. Mixed precision runs only on a GPU (on a CPU, float16 is
emulated and bfloat16 matmuls are slow, so its timings would mislead).
"""
import numpy as np

from keypoint_gnn import xla
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.benchmarks import isolation, machine, measure
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.models import build_classifier, build_plain_cnn

DETECTORS = ("maxpool_nms", "attention", "grid")
GNNS = ("gcn", "diffpool")
PLAIN = "plain_cnn"
# The plain CNN is matched to this keypoint model's parameter count (the default config's).
REFERENCE_MODEL = "maxpool_nms/gcn"
WORKLOAD = {"batch": 64, "image_size": 48}
XLA_MODES = ("off", "graph", "step")


def model_names(detectors=DETECTORS, gnns=GNNS):
    return [f"{detector}/{gnn}" for detector in detectors for gnn in gnns] + [PLAIN]


def build_model(name, image_size, target_params=None, precision="float32"):
    """A classifier by benchmark name: "<detector>/<gnn>" or "plain_cnn" (matched to
    `target_params`)."""
    policy = "mixed_float16" if precision == "mixed_float16" else "float32"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        if name == PLAIN:
            return build_plain_cnn(ModelConfig(image_size=image_size), target_params=target_params)
        detector, gnn = name.split("/")
        return build_classifier(ModelConfig(image_size=image_size, detector={"kind": detector},
                                            graph={"kind": gnn}))
    finally:
        keras.mixed_precision.set_global_policy(previous)


def setup_training(name, batch, image_size, xla_mode="off", target_params=None,
                   precision="float32", seed=0):
    """(call, info): one `train_on_batch` step of the named model on a fixed random batch,
    compiled under `xla_mode` ("off", "graph" or "step", see `keypoint_gnn.xla`)."""
    keras.utils.set_random_seed(seed)
    model = build_model(name, image_size, target_params, precision)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **xla.compile_kwargs(xla_mode))
    if xla_mode == "graph":
        # The model lives only for this benchmark: the wrappers are never released.
        xla.compile_graph_section(model)
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.random((batch, image_size, image_size, 3), dtype=np.float32))
    labels = tf.constant(rng.integers(0, model.output_shape[-1], batch))
    return (lambda: model.train_on_batch(images, labels)), {"parameters": model.count_params()}


def benchmark_training(*, warmup, repeats, memory=True, memory_limit_bytes=None, jobs=1,
                       workload=None, detectors=DETECTORS, gnns=GNNS, xla_modes=XLA_MODES,
                       gpu=None):
    """Every model x XLA mode (x mixed precision on a GPU), steps interleaved in one group.

    Returns:
      {"workload", "plain_cnn_target_params", "precisions", "xla_auto", "notes", "group" (the
      `measure.time_group`, with the A/A copy of the plain CNN without XLA), "aa_flag",
      "cases": {key: {...}}}, key "<model> | xla=<mode> | <precision>"; each case has the timing
      summary, "images_per_second", "parameters", "device", "ratio_to_plain_cnn" (same XLA
      mode and precision; not on the plain CNN itself), "ratio_xla_to_no_xla" (XLA modes), both `measure.paired_ratio`s of
      the group, and "memory" (with XLA: reference and plain CNN only). "xla_auto" is the mode
      that `--xla` (auto) picks on this machine.
    """
    workload = dict(workload or WORKLOAD)
    gpu = machine.has_gpu() if gpu is None else gpu
    reference = REFERENCE_MODEL if REFERENCE_MODEL in model_names(detectors, gnns) \
        else model_names(detectors, gnns)[0]
    target_params = build_model(reference, workload["image_size"]).count_params()
    precisions = ["float32"]
    notes = []
    if gpu:
        precisions.append("mixed_float16")
    else:
        notes.append("no GPU detected: mixed precision skipped (float16 is emulated on a CPU)")
    notes.append("XLA modes (keypoint_gnn.xla): off; graph = only the keypoint and graph layers "
                 "XLA-compiled; step = compile(jit_compile=True). --xla picks "
                 f"{xla.resolve_mode('auto', gpu)} here")
    cases, calls = {}, {}
    for precision in precisions:
        for mode in xla_modes:
            for name in model_names(detectors, gnns):
                key = case_key(name, mode, precision)
                params = dict(name=name, xla_mode=mode, precision=precision,
                              target_params=target_params if name == PLAIN else None, **workload)
                calls[key], info = setup_training(**params)
                cases[key] = {"model": name, "xla": mode, "precision": precision,
                              "device": "gpu" if gpu else "cpu", "params": params, **info}
    aa = case_key(PLAIN, xla_modes[0], "float32")
    group = measure.time_group(calls, warmup, repeats, label="training", aa=aa)
    for key, case in cases.items():
        case.update({k: v for k, v in group["timings"][key].items() if k != "rounds_ms"})
        case["seconds_per_step"] = case["median_ms"] / 1000.0
        case["images_per_second"] = workload["batch"] / case["seconds_per_step"]
    for key, case in cases.items():
        plain = case_key(PLAIN, case["xla"], case["precision"])
        if key != plain:
            case["ratio_to_plain_cnn"] = measure.group_ratio(group, key, plain)
        if case["xla"] != "off" and "off" in xla_modes:
            case["ratio_xla_to_no_xla"] = measure.group_ratio(
                group, key, case_key(case["model"], "off", case["precision"]))
    if memory:
        # Without XLA for every model; with XLA for the reference and the plain CNN only
        # (each worker costs a TensorFlow import and a compilation).
        keys = [key for key, case in cases.items()
                if case["xla"] == "off" or case["model"] in (reference, PLAIN)]
        jobs_list = [dict(setup="keypoint_gnn.benchmarks.training:setup_training",
                          params=cases[key]["params"], calls=3,
                          memory_limit_bytes=memory_limit_bytes) for key in keys]
        for key, record in zip(keys, isolation.run_isolated_many(jobs_list, jobs)):
            cases[key]["memory"] = isolation.memory_summary(record)
    return {"workload": workload, "reference_model": reference,
            "plain_cnn_target_params": target_params, "precisions": precisions,
            "xla_auto": xla.resolve_mode("auto", gpu), "notes": notes, "group": group,
            "aa_flag": group["aa_flag"], "gpu": gpu, "cases": cases}


def case_key(name, xla_mode, precision="float32"):
    return f"{name} | xla={xla_mode} | {precision}"
