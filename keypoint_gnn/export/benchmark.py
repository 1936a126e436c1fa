"""Batch-1 inference latency and size on disk of each deployment format.

For a classifier it exports the TF Serving SavedModel and every TFLite variant into a work
directory, then times one image at a time: `warmup` untimed calls, then the median of `repeats`
timed calls, in milliseconds of wall time on this machine's CPU.

  SavedModel: `serving_default` on a uint8 (1, S, S, C) image (preprocessing included), loaded
    with `tf.saved_model.load`, as TF Serving would run it (without the network).
  TFLite: the `ai_edge_litert` interpreter on float32 (1, S, S, C), `num_threads` threads.
"""
from __future__ import annotations

import dataclasses
import pathlib
import statistics
import tempfile
import time

import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.export.saved_model import export_saved_model
from keypoint_gnn.export.tflite import QUANTIZATIONS, TFLiteClassifier, export_tflite


@dataclasses.dataclass
class InferenceTiming:
    """One format's numbers.

    Attributes:
      format: "savedmodel" or "tflite".
      quantize: "none", "float16", "dynamic" or "int8" ("none" for the SavedModel).
      size_bytes: bytes on disk (the whole version directory for the SavedModel).
      median_ms: median batch-1 latency in milliseconds.
      p90_ms: 90th percentile latency in milliseconds.
      repeats: timed calls.
    """

    format: str
    quantize: str
    size_bytes: int
    median_ms: float
    p90_ms: float
    repeats: int

    def to_dict(self):
        return dataclasses.asdict(self)


def directory_size(path):
    """Bytes of all files under `path` (or of the file `path`)."""
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def time_calls(call, warmup, repeats):
    """[seconds] of `repeats` calls of `call()` after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def _timing(format, quantize, size, seconds):
    milliseconds = np.asarray(seconds) * 1000.0
    return InferenceTiming(format, quantize, int(size), float(statistics.median(milliseconds)),
                           float(np.percentile(milliseconds, 90)), len(milliseconds))


def benchmark_inference(model, config, work_dir=None, *, quantizations=QUANTIZATIONS,
                        representative_images=None, warmup=5, repeats=50, num_threads=1, seed=0):
    """Exports `model` in every format and times batch-1 inference.

    Args:
      model: classifier from `keypoint_gnn.build_classifier(config)`.
      config: its `ModelConfig`.
      work_dir: where the exports go (kept); None uses a temporary directory (removed).
      quantizations: TFLite variants to include, from "none", "float16", "dynamic", "int8".
      representative_images: float32 (B, S, S, C) in [0, 1] for int8 calibration; None
        calibrates on uniform noise (fine for timing and size, not for accuracy).
      warmup: untimed calls before timing, >= 0.
      repeats: timed calls, >= 1.
      num_threads: TFLite interpreter threads.
      seed: seed of the random test image.

    Returns:
      list of `InferenceTiming`: the SavedModel first, then each TFLite variant.
    """
    for value in quantizations:
        if value not in QUANTIZATIONS:
            raise ValueError(f"quantization {value!r} is not one of "
                             f"{', '.join(map(repr, QUANTIZATIONS))}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be a positive integer")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be a non-negative integer")
    shape = (1, config.image_size, config.image_size, config.channels)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    if representative_images is None and "int8" in quantizations:
        representative_images = rng.random((32,) + shape[1:], dtype=np.float32)

    with tempfile.TemporaryDirectory(prefix="benchmark-inference-") as scratch:
        root = pathlib.Path(work_dir) if work_dir is not None else pathlib.Path(scratch)
        version_dir = export_saved_model(model, config, base_dir=root / "saved_models",
                                         name="benchmark")
        signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        images = tf.constant(pixels)
        timings = [_timing("savedmodel", "none", directory_size(version_dir),
                           time_calls(lambda: signature(images=images), warmup, repeats))]
        floats = pixels.astype(np.float32) / 255.0
        for quantize in quantizations:
            path = export_tflite(model, config, root / "tflite" / f"benchmark-{quantize}.tflite",
                                 quantize=quantize, representative_images=representative_images)
            classifier = TFLiteClassifier(path, config, num_threads=num_threads)
            seconds = time_calls(lambda c=classifier: c.run(floats), warmup, repeats)
            timings.append(_timing("tflite", quantize, directory_size(path), seconds))
    return timings


def format_timings(timings):
    """A plain-text table of `benchmark_inference`'s result."""
    lines = [f"{'format':<11}{'quantize':<9}{'size KiB':>10}{'median ms':>11}{'p90 ms':>9}"]
    for t in timings:
        lines.append(f"{t.format:<11}{t.quantize:<9}{t.size_bytes / 1024:>10.1f}"
                     f"{t.median_ms:>11.3f}{t.p90_ms:>9.3f}")
    return "\n".join(lines)


__all__ = ["InferenceTiming", "benchmark_inference", "directory_size", "format_timings"]
