"""Inference latency at batch 1 and batch 64: Keras, SavedModel and TFLite, side by side.

  keras_function     `model(x, training=False)` inside a `tf.function`, float32 input
  keras_predict      `model.predict_on_batch(x)`
  savedmodel         `tf.saved_model.load(...).signatures["serving_default"]` on uint8 pixels
                     (its in-graph preprocessing included), as TF Serving runs it
  tflite             the `ai_edge_litert` interpreter; batch 1 in every quantisation; batch 64
                     (float32) as one invocation on the input resized to 64 (the export has a
                     dynamic batch, checked by `tflite_batch_support` before timing)

All formats of one batch size run interleaved in one group, so "x SavedModel" (each row's time
over the SavedModel's) compares calls made under the same load.
"""
import os
import pathlib
import tempfile

import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import isolation, machine, measure
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.export.benchmark import directory_size
from keypoint_gnn.export.saved_model import export_saved_model
from keypoint_gnn.export.tflite import QUANTIZATIONS, TFLiteClassifier, export_tflite
from keypoint_gnn.models import build_classifier

BATCHES = (1, 64)
FORMATS = ("keras_function", "keras_predict", "savedmodel", "tflite")


def _images(config, batch, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, config.image_size, config.image_size, config.channels),
                          dtype=np.uint8)
    return pixels, pixels.astype(np.float32) / 255.0


def setup_inference(format, batch, config, path=None, num_threads=None, model=None, seed=0):
    """(call, info) for one format at one batch size.

    Args:
      format: one of FORMATS.
      config: ModelConfig as a dict.
      path: the SavedModel version directory or .tflite file (for those formats).
      num_threads: TFLite interpreter threads (default: all cores).
      model: the Keras classifier (default: built from `config`, random weights).
    """
    config = ModelConfig.from_dict(config)
    pixels, floats = _images(config, batch, seed)
    if format in ("keras_function", "keras_predict"):
        model = model if model is not None else build_classifier(config)
        if format == "keras_predict":
            return (lambda: model.predict_on_batch(floats)), {}
        forward = tf.function(lambda x: model(x, training=False))
        inputs = tf.constant(floats)
        return (lambda: forward(inputs).numpy()), {}
    if format == "savedmodel":
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        inputs = tf.constant(pixels)
        return (lambda: {k: v.numpy() for k, v in signature(images=inputs).items()}), {}
    if format == "tflite":
        classifier = TFLiteClassifier(path, config, num_threads=num_threads or os.cpu_count())
        return (lambda: classifier.run(floats)), {}
    raise ValueError(f"format={format!r} is not one of {FORMATS}")


def tflite_batch_support(path, config, batch, atol=1e-4):
    """Whether the TFLite model at `path` runs `batch` images in one invocation.

    Resizes the input tensor, then checks the outputs' batch dimension, and their values
    against batch-1 runs of the same images (within `atol`). Returns (True, "") or
    (False, reason).
    """
    from ai_edge_litert.interpreter import Interpreter

    _, floats = _images(config, batch)
    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]

    def outputs(images):
        interpreter.resize_tensor_input(index, list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]

    try:
        batched = outputs(floats)
    except (RuntimeError, ValueError) as error:
        return False, f"resizing the input to batch {batch} fails: {error}"
    shapes = [tuple(output.shape) for output in batched]
    if any(shape[0] != batch for shape in shapes):
        return False, (f"resizing the input to batch {batch} runs but the outputs have batches "
                       f"{[shape[0] for shape in shapes]} ({shapes}): the model was exported "
                       "with a fixed batch")
    singles = [outputs(floats[i:i + 1]) for i in range(batch)]
    for position, output in enumerate(batched):
        expected = np.concatenate([single[position] for single in singles])
        error = float(np.max(np.abs(output - expected)))
        if not error <= atol:
            return False, (f"batch {batch} runs but output {position} differs from batch-1 runs "
                           f"by up to {error:.3g} (> {atol})")
    return True, ""


def benchmark_inference_formats(*, warmup, repeats, memory=True, memory_limit_bytes=None,
                                jobs=1, config=None, quantizations=QUANTIZATIONS,
                                work_dir=None):
    """Exports one classifier, then times every (format, batch) interleaved, a group per batch.

    Batch 1 includes every TFLite quantisation; batch 64 the float32 TFLite model as one
    invocation. Each row has "x_savedmodel": its time over the SavedModel's at the same batch
    (`measure.paired_ratio` within the batch's group).

    Returns:
      {"config", "rows": [...], "groups": {batch: time_group}, "aa_flag", "tflite_batch64",
      "notes"}.

    Raises:
      RuntimeError: the exported TFLite model does not run batch 64 in one invocation with the
        batch-1 outputs (a regression of `export_tflite`'s dynamic batch).
    """
    config = config or ModelConfig()
    model = build_classifier(config)
    threads = os.cpu_count()
    rng = np.random.default_rng(0)
    representative = rng.random((32, config.image_size, config.image_size, config.channels),
                                dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="benchmark-inference-") as scratch:
        root = pathlib.Path(work_dir or scratch)
        saved = export_saved_model(model, config, base_dir=root / "saved_models", name="bench")
        tflite_paths = {quantize: export_tflite(model, config, root / "tflite" / f"{quantize}.tflite",
                                                quantize=quantize,
                                                representative_images=representative)
                        for quantize in dict.fromkeys(("none",) + tuple(quantizations))}
        supported, reason = tflite_batch_support(tflite_paths["none"], config, max(BATCHES))
        if not supported:
            raise RuntimeError(f"TFLite batch {max(BATCHES)} in one invocation: {reason}")
        rows, groups = [], {}
        for batch in BATCHES:
            calls, cells = {}, {}
            for format in FORMATS:
                variants = [("none", None)]
                if format == "savedmodel":
                    variants = [("none", saved)]
                elif format == "tflite":
                    chosen = quantizations if batch == 1 else ("none",)
                    variants = [(q, tflite_paths[q]) for q in dict.fromkeys(chosen)]
                for quantize, path in variants:
                    key = format if quantize == "none" else f"{format} {quantize}"
                    calls[key], _ = setup_inference(format, batch, config.to_dict(), path,
                                                    threads, model=model)
                    cells[key] = {"format": format, "quantize": quantize, "batch": batch,
                                  "path": str(path) if path else None,
                                  "size_bytes": directory_size(path) if path else None}
            group = measure.time_group(calls, warmup, repeats, label=f"inference batch {batch}",
                                       aa="savedmodel")
            groups[str(batch)] = group
            for key, cell in cells.items():
                timing = {k: v for k, v in group["timings"][key].items() if k != "rounds_ms"}
                row = {**cell, **timing, "ms_per_image": timing["median_ms"] / batch}
                if key != "savedmodel":
                    row["x_savedmodel"] = measure.group_ratio(group, key, "savedmodel")
                rows.append(row)
        if memory:
            jobs_list = [dict(setup="keypoint_gnn.benchmarks.inference:setup_inference",
                              params=dict(format=row["format"], batch=row["batch"],
                                          config=config.to_dict(), path=row["path"],
                                          num_threads=threads),
                              calls=3, memory_limit_bytes=memory_limit_bytes) for row in rows]
            for row, record in zip(rows, isolation.run_isolated_many(jobs_list, jobs)):
                row["memory"] = isolation.memory_summary(record)
    for row in rows:
        row.pop("path", None)
    notes = [f"TFLite uses {threads} interpreter threads; TensorFlow uses its default pools",
             "savedmodel input is uint8 and includes the in-graph preprocessing",
             f"TFLite batch {max(BATCHES)} is one invocation on the input resized to "
             f"{max(BATCHES)} (float32)",
             "x SavedModel: the row's time over the SavedModel's, round by round in the same "
             "group (below 1: faster than the SavedModel)"]
    if machine.has_gpu():
        notes.append("Keras and SavedModel rows ran on the GPU, TFLite on the CPU")
    return {"config": config.to_dict(), "rows": rows, "groups": groups,
            "aa_flag": any(group["aa_flag"] for group in groups.values()),
            "tflite_batch64": {"supported": supported, "reason": reason}, "notes": notes}
