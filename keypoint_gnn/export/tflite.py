"""TFLite export (`export_tflite`) and runtime (`TFLiteClassifier`, `run_tflite`).

TFLite (`export_tflite`): input float32 (B, S, S, C) in [0, 1] with a dynamic batch B (the
Keras model's input: resizing happens outside, in `preprocess_images`; resize the interpreter's
input to the batch and allocate tensors, as `TFLiteClassifier` does), outputs `logits`,
`probabilities`, `keypoints` (y, x) in model-input pixels and `keypoint_scores`, each with batch
B. Quantised variants keep float32 inputs and outputs, int8 included, so callers feed the same
arrays to every variant; int8 quantises the convolutions and dense layers only (see
`export_tflite`).
"""
from __future__ import annotations

import json
import pathlib
import tempfile

import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.export.files import (
    PARTIAL_SUFFIX,
    clean_stale,
    dumps_strict,
    write_atomic,
)
from keypoint_gnn.export.preprocessing import (
    model_to_input_pixels,
    preprocess_images,
    top_k_count,
)
from keypoint_gnn.export.saved_model import (
    _check_class_names,
    _check_model,
    inference_model,
)
from keypoint_gnn.export.signatures import SERVING_DEFAULT

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


class _TFLiteModule(tf.Module):
    """float32 (B, S, S, C) in [0, 1], B dynamic -> logits, probabilities, keypoints, scores.

    The signature is traced with batch None, so the converter keeps the batch dynamic (-1 in the
    input's `shape_signature`) instead of folding batch 1 into the reshapes.
    """

    def __init__(self, model, config):
        super().__init__(name="keypoint_gnn_tflite")
        _check_model(model, config)
        self.model_variables = list(model.variables)
        network = inference_model(model)
        stride = config.feature_stride
        spec = tf.TensorSpec([None, config.image_size, config.image_size, config.channels],
                             tf.float32, name="images")

        @tf.function(input_signature=[spec])
        def serve(images):
            logits, positions, scores = network(images, training=False)
            logits = tf.cast(logits, tf.float32)
            return {
                "logits": logits,
                "probabilities": tf.nn.softmax(logits, axis=-1),
                "keypoints": tf.cast(positions, tf.float32) * float(stride) + (stride - 1) / 2.0,
                "keypoint_scores": tf.cast(scores, tf.float32),
            }

        self.serve = serve


def _representative_dataset(representative_images, channels, image_size):
    images = np.asarray(representative_images, dtype=np.float32)
    expected = (image_size, image_size, channels)
    if images.ndim != 4 or images.shape[1:] != expected or images.shape[0] == 0:
        raise ValueError(f"representative_images must have shape (B, {image_size}, {image_size}, "
                         f"{channels}) float32 in [0, 1] with B >= 1, got {images.shape}")

    def generate():
        for image in images:
            yield {"images": image[None]}

    return generate


# int8 quantises these ops; every other op (keypoint top-k, gathers, adjacency, scatter-mean,
# softmax) stays float32: quantising them all took a trained model's test accuracy to chance.
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def _tflite_op_names(flat_buffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flat_buffer)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def convert_tflite(model, config, quantize="none", representative_images=None):
    """The TFLite flat buffer (bytes) of `export_tflite`; see there."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not one of {', '.join(map(repr, QUANTIZATIONS))}")
    if quantize == "int8" and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (B, S, S, C) float32 in "
                         "[0, 1], a few hundred training images, to calibrate activation ranges")
    _check_model(model, config)  # before the slow calibration set-up and conversion
    if quantize == "int8":
        representative = _representative_dataset(representative_images, config.channels,
                                                 config.image_size)
    module = _TFLiteModule(model, config)
    with tempfile.TemporaryDirectory(prefix="tflite-") as staging:
        tf.saved_model.save(module, staging,
                            signatures={SERVING_DEFAULT: module.serve.get_concrete_function()})

        def converter():
            result = tf.lite.TFLiteConverter.from_saved_model(staging,
                                                              signature_keys=[SERVING_DEFAULT])
            if quantize != "none":
                result.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                result.target_spec.supported_types = [tf.float16]
            if quantize == "int8":
                result.representative_dataset = representative
            return result

        if quantize != "int8":
            return converter().convert()
        float_ops = [name for name in _tflite_op_names(tf.lite.TFLiteConverter.from_saved_model(
            staging, signature_keys=[SERVING_DEFAULT]).convert()) if name not in INT8_OPS]
        # Selective full-integer quantisation: the documented route is the quantisation
        # debugger's denylist; inputs and outputs stay float32.
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter(), debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops))
        return debugger.get_nondebug_quantized_model()


def _is_tflite_partial(entry):
    """Temporary files of `export_tflite` (and the `.tmp-<name>.tflite` of older versions):
    the only `.tmp-*` entries it cleans in a folder that may hold other files."""
    return entry.is_file() and (entry.name.endswith(PARTIAL_SUFFIX)
                                or entry.name.endswith(".tflite"))


def export_tflite(model, config, path, quantize="none", representative_images=None,
                  class_names=None):
    """Writes `model` as a TFLite model (dynamic batch), and class names/config next to it.

    Nothing is written when the model, its weights (a NaN or an infinity: a diverged model) or
    the arguments are invalid: ValueError saying why. The `.tflite` and its `.json` are each
    written to a temporary `.tmp-<pid>@<host>@*.partial` file and renamed into place when
    complete (never half-written); partial files of exports killed before their rename are
    removed by the next export to the same folder (the rule: `keypoint_gnn.export.files`). File
    modes: those of a plain open under the umask (0o644 under umask 022). The caller names the
    file: `trainers.export` checks the model name with `check_export_name` first.

    Args:
      model: classifier from `keypoint_gnn.build_classifier(config)`.
      config: its `ModelConfig`.
      path: the `.tflite` file; `<path>.json` gets the config, the quantisation and
        `class_names` (see `write_tflite_info`).
      quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
        float activations) or "int8": int8 weights and activations, calibrated on
        `representative_images`, for the convolutions and dense layers (`INT8_OPS`, nearly all
        the weights and compute); keypoint selection, graph building and scatter stay float32
        (quantised, they took accuracy to chance); float32 input and output tensors, so every
        variant takes the same input.
      representative_images: float32 (B, S, S, C) in [0, 1]; required for "int8".
      class_names: optional list of `config.num_classes` names for `<path>.json`.

    Returns:
      pathlib.Path of the written file. The model's signature `serving_default` takes
      `images` float32 (B, S, S, C) in [0, 1], any batch B (every quantisation; the input's
      `shape_signature` is (-1, S, S, C): resize the input tensor to (B, S, S, C) and allocate
      tensors before setting it, or call the signature runner, which does both) and returns
      `logits` (B, classes), `probabilities` (B, classes), `keypoints` (B, N, 2) (y, x) in
      model-input pixels and `keypoint_scores` (B, N).
    """
    path = pathlib.Path(path)
    info_text = _tflite_info_text(path, config, quantize, class_names)
    flat_buffer = convert_tflite(model, config, quantize, representative_images)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, select=_is_tflite_partial)
    write_atomic(path, flat_buffer)
    write_atomic(tflite_info_path(path), info_text)
    return path


def tflite_info_path(path):
    return pathlib.Path(f"{path}.json")


def _tflite_info_text(path, config, quantize, class_names):
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a keypoint_gnn.ModelConfig, got {type(config).__name__}")
    info = {"config": config.to_dict(), "quantize": quantize,
            "class_names": _check_class_names(class_names, config)}
    return dumps_strict(info, str(tflite_info_path(path)))


def _read_tflite_info(info_path):
    """`<path>.json` as a dict ({} when absent); ValueError naming the file when it is not a
    JSON object."""
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(info_path)!r} is not JSON ({error}): re-export the model") \
            from None
    if not isinstance(info, dict):
        raise ValueError(  # noqa: TRY004  (a bad file, not a bad argument)
            f"{str(info_path)!r} must hold a JSON object, not {type(info).__name__}: re-export "
            "the model")
    return info


def write_tflite_info(path, config, *, quantize="none", class_names=None):
    """Writes `<path>.json` (strict JSON, atomically): config, quantisation, class names (None
    keeps those written)."""
    info_path = tflite_info_path(path)
    if class_names is None:
        class_names = _read_tflite_info(info_path).get("class_names")
    return write_atomic(info_path, _tflite_info_text(path, config, quantize, class_names))


class TFLiteClassifier:
    """Runs an exported TFLite model with `ai_edge_litert`, a whole batch per invocation.

    The interpreter's input is resized to the caller's batch when it differs from the last one
    (`export_tflite` models have a dynamic batch). A model with a fixed batch of 1 (exported
    before the batch became dynamic) is run one image at a time instead; any other mismatch
    between the input batch and the output batch raises rather than return wrong outputs.

    Args:
      path: the `.tflite` file from `export_tflite`.
      config: its `ModelConfig`; None reads `<path>.json`.
      num_threads: interpreter threads.

    Attributes:
      config, class_names (list or None), dynamic_batch (bool: one invocation per batch).
    """

    def __init__(self, path, config=None, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite model {str(path)!r} does not exist")
        info_path = tflite_info_path(path)
        info = _read_tflite_info(info_path)
        if config is None:
            if "config" not in info:
                raise FileNotFoundError(f"{str(info_path)!r} (the model's config) does not "
                                        "exist: pass config=ModelConfig(...)")
            try:
                config = ModelConfig.from_dict(info["config"])
            except ValueError as error:
                raise ValueError(f"{str(info_path)!r} holds no valid ModelConfig (re-export "
                                 f"the model with this version): {error}") from None
        self.config = config
        self.class_names = info.get("class_names")
        self._path = path
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except ValueError as error:
            raise ValueError(f"{str(path)!r} is not a readable TFLite model: {error}") from None
        self._runner = self._interpreter.get_signature_runner(SERVING_DEFAULT)
        shape = self._runner.get_input_details()["images"]["shape_signature"]
        self.dynamic_batch = int(shape[0]) == -1
        if not self.dynamic_batch and int(shape[0]) != 1:
            raise ValueError(f"{str(path)!r} has a fixed input batch of {int(shape[0])}: "
                             "re-export it with export_tflite (dynamic batch)")

    def _invoke(self, images):
        outputs = self._runner(images=images)  # resizes the input and allocates when B changes
        batches = {key: value.shape[0] for key, value in outputs.items()}
        if any(batch != len(images) for batch in batches.values()):
            raise RuntimeError(f"{str(self._path)!r} returned batches {batches} for an input "
                               f"batch of {len(images)}: re-export it with export_tflite")
        return outputs

    def run(self, images, batch_size=None):
        """float32 (B, S, S, C) in [0, 1] -> dict of numpy arrays: `logits`, `probabilities`
        (B, classes), `keypoints` (B, N, 2) model-input pixels, `keypoint_scores` (B, N).

        Args:
          images: float32 (B, S, S, C) in [0, 1], B >= 1.
          batch_size: images per invocation; None runs all B in one invocation (1 for a model
            with a fixed batch of 1).
        """
        size, channels = self.config.image_size, self.config.channels
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (size, size, channels) or not len(images):
            raise ValueError(f"images must have shape (B, {size}, {size}, {channels}) float32 "
                             f"in [0, 1] with B >= 1, got {images.shape}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} must be None or a positive integer")
        if not self.dynamic_batch:
            batch_size = 1
        if batch_size is None or batch_size >= len(images):
            return self._invoke(images)
        rows = [self._invoke(images[start:start + batch_size])
                for start in range(0, len(images), batch_size)]
        return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}

    def predict(self, images, batch_size=None):
        """uint8 images, any size -> the SavedModel's output dict (keypoints in input-image
        pixels, top_classes), computed with the same preprocessing, in one invocation.

        Args:
          images: uint8 (B, H, W, C_in), or a list of uint8 (H, W, C_in) images whose sizes and
            channels (1..4) may differ; each is preprocessed on its own, then all run together.
          batch_size: as in `run`.
        """
        size, channels = self.config.image_size, self.config.channels
        if isinstance(images, (list, tuple)):
            images = [np.asarray(image) for image in images]
            if not images or any(image.ndim != 3 for image in images):
                raise ValueError("images must be a non-empty list of uint8 (H, W, C) arrays, got "
                                 f"shapes {[image.shape for image in images]}")
            pixels = np.concatenate([preprocess_images(image[None], size, channels).numpy()
                                     for image in images])
            heights = np.array([image.shape[0] for image in images], np.int32)
            widths = np.array([image.shape[1] for image in images], np.int32)
        else:
            images = np.asarray(images)
            pixels = preprocess_images(images, size, channels).numpy()
            heights, widths = images.shape[1], images.shape[2]
        outputs = self.run(pixels, batch_size)
        keypoints = model_to_input_pixels(outputs["keypoints"], size, heights, widths).numpy()
        k = top_k_count(self.config.num_classes)
        top = np.argsort(-outputs["probabilities"], axis=-1, kind="stable")[:, :k]
        return {"probabilities": outputs["probabilities"], "top_classes": top.astype(np.int32),
                "keypoints": keypoints, "keypoint_scores": outputs["keypoint_scores"]}


def run_tflite(path, images, config=None, batch_size=None):
    """`TFLiteClassifier(path, config).run(images, batch_size)`: float32 (B, S, S, C) in [0, 1]
    in, all B in one invocation unless `batch_size` is given."""
    return TFLiteClassifier(path, config).run(images, batch_size)
