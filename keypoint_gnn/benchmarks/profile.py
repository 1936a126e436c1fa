"""What dominates a step: each part timed alone, forward and backward, with or without XLA.

A coarse op-level breakdown that needs no profiler UI: every top-level layer of a model is
wrapped in its own `tf.function` that runs it on the inputs it sees inside the model and takes
the gradient of the sum of its outputs with respect to its weights and inputs; the layers and
the model's whole training step are timed in one interleaved group, so the shares and the rest
(step minus the layers) compare calls of the same run. `trace_steps`
writes a TensorFlow profiler trace as well, for TensorBoard's profile plugin.
"""
import numpy as np

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.benchmarks import measure
from keypoint_gnn.benchmarks.training import build_model


def _forward_backward(layer, inputs):
    flat = tf.nest.flatten(inputs)
    floats = [t for t in flat if t.dtype.is_floating]
    with tf.GradientTape() as tape:
        tape.watch(floats)
        outputs = layer(inputs, training=True)
        total = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32))
                          for o in tf.nest.flatten(outputs) if o.dtype.is_floating])
    gradients = tape.gradient(total, layer.trainable_variables + floats,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return total, gradients


def layer_parts(model, images):
    """{layer name: call} timing each top-level layer's forward + backward on its real inputs."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    # The last inbound node is the call inside `model` (a nested Sequential's first node is its
    # own Input).
    probe = keras.Model(model.inputs,
                        [layer.get_input_at(len(layer.inbound_nodes) - 1) for layer in layers])
    layer_inputs = probe(images, training=False)
    parts = {}
    for layer, inputs in zip(layers, layer_inputs):
        parts[layer.name] = (layer, inputs)
    return parts


def layer_breakdown(name, batch, image_size, *, warmup, repeats, target_params=None,
                    xla_settings=(False, True), seed=0):
    """Per-layer forward+backward milliseconds of the named training model, and its whole
    `train_on_batch` step (XLA off, or `compile(jit_compile=True)` for the XLA setting), all
    timed in one interleaved group.

    Returns {"model", "rows": [{"layer", "ms": {"False": ms, "True": ms}, "share": {...}}],
    "total_ms", "train_step_ms", "group"}; each setting's shares sum to 1 over the layers.
    """
    from keypoint_gnn.benchmarks.training import setup_training

    keras.utils.set_random_seed(seed)
    model = build_model(name, image_size, target_params)
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.random((batch, image_size, image_size, 3), dtype=np.float32))
    parts = layer_parts(model, images)
    calls = {}
    for layer_name, (layer, inputs) in parts.items():
        for jit_compile in xla_settings:
            function = tf.function(lambda x, layer=layer: _forward_backward(layer, x),
                                   jit_compile=jit_compile)
            calls[f"{layer_name} | XLA={jit_compile}"] = (
                lambda f=function, x=inputs: tf.nest.map_structure(lambda t: t.numpy(), f(x)))
    for jit_compile in xla_settings:
        calls[f"train_on_batch | XLA={jit_compile}"], _ = setup_training(
            name, batch, image_size, xla_mode="step" if jit_compile else "off",
            target_params=target_params, seed=seed)
    group = measure.time_group(calls, warmup, repeats, label=f"profile {name}")
    ms = {key: timing["median_ms"] for key, timing in group["timings"].items()}
    totals = {jit: sum(ms[f"{n} | XLA={jit}"] for n in parts) for jit in xla_settings}
    rows = []
    for layer_name in parts:
        rows.append({
            "layer": layer_name,
            "ms": {str(jit): ms[f"{layer_name} | XLA={jit}"] for jit in xla_settings},
            "share": {str(jit): ms[f"{layer_name} | XLA={jit}"] / totals[jit]
                      for jit in xla_settings},
        })
    return {"model": name, "batch": batch, "image_size": image_size,
            "total_ms": {str(jit): total for jit, total in totals.items()},
            "train_step_ms": {str(jit): ms[f"train_on_batch | XLA={jit}"]
                              for jit in xla_settings},
            "rows": rows, "group": group}


def time_parts(parts, *, warmup, repeats, xla_settings=(False, True)):
    """Each zero-argument TF function in `parts` ({name: fn}) in a tf.function, per setting,
    all in one interleaved group.

    Returns {"rows": [{"part", "ms": {"False": ms, "True": ms}}], "group"}."""
    calls = {}
    for name, fn in parts.items():
        for jit_compile in xla_settings:
            function = tf.function(fn, jit_compile=jit_compile)
            calls[f"{name} | XLA={jit_compile}"] = (
                lambda f=function: tf.nest.map_structure(lambda t: t.numpy(), f()))
    group = measure.time_group(calls, warmup, repeats, label="profile parts")
    timings = group["timings"]
    return {"rows": [{"part": name,
                      "ms": {str(jit): timings[f"{name} | XLA={jit}"]["median_ms"]
                             for jit in xla_settings}}
                     for name in parts], "group": group}


def trace_steps(step, logdir, steps=3):
    """Writes a TensorFlow profiler trace of `steps` calls of `step` to `logdir`."""
    step()
    tf.profiler.experimental.start(str(logdir))
    try:
        for index in range(steps):
            with tf.profiler.experimental.Trace("train", step_num=index, _r=1):
                step()
    finally:
        tf.profiler.experimental.stop()
