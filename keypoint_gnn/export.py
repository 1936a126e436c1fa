"""Deployment: a trained classifier as a TF Serving SavedModel or a TFLite flat buffer.

SavedModel (TF Serving layout `base_dir/<name>/<version>/`, integer versions) with two
signatures that return the same dict:

  serving_default  images       uint8 (B, H, W, C), any H and W, C = 1..4
  serving_bytes    image_bytes  string (B,), encoded JPEG / PNG / GIF / BMP, sizes may differ
  ->  probabilities    float32 (B, classes)   softmax of the logits
      top_classes      int32   (B, k)         class indices, best first, k = min(5, classes)
      keypoints        float32 (B, N, 2)      (y, x) in pixels of the INPUT image
      keypoint_scores  float32 (B, N)

Preprocessing lives inside the graph and repeats the training pipeline's
(`keypoint_gnn.data.pipeline`): channels converted (grey <-> RGB, alpha dropped), a bilinear
antialiased resize to `config.image_size` when the size differs, rounding to whole uint8 values,
then division by 255.

The export goes through a `tf.Module` whose `tf.function`s close over the Keras model and which
tracks only `model.variables`: tf_keras's own SavedModel serialisation fails on Spektral's layers
(see shared DESIGN notes).

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
import os
import pathlib
import shutil
import tempfile

import numpy as np

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.models import ModelConfig

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SIGNATURES = (SERVING_DEFAULT, SERVING_BYTES)
INPUT_KEYS = {SERVING_DEFAULT: "images", SERVING_BYTES: "image_bytes"}
OUTPUT_KEYS = ("probabilities", "top_classes", "keypoints", "keypoint_scores")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
EXPORT_INFO_FILE = "export.json"
LABELS_FILE = "labels.txt"
MAX_TOP_CLASSES = 5
_LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601, as the data pipeline and TF use


# ---------------------------------------------------------------------------------------------
# Preprocessing and keypoint units (shared by the SavedModel graph and the TFLite helper)


def convert_channels(images, channels):
    """float32 (B, H, W, C_in) -> (B, H, W, channels), C_in 1 or 2 grey (+alpha), 3 or 4 RGB (+alpha).

    Raises `tf.errors.InvalidArgumentError` (graph) or ValueError (eager) naming C_in when it is
    not 1..4.
    """
    source_channels = tf.shape(images)[-1]
    tf.debugging.assert_less_equal(
        source_channels, 4,
        message="images must have 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels")
    tf.debugging.assert_greater_equal(
        source_channels, 1, message="images must have at least one channel")
    is_grey = source_channels <= 2
    if channels == 1:
        converted = tf.cond(
            is_grey, lambda: images[..., :1],
            lambda: tf.reduce_sum(images[..., :3] * _LUMA_WEIGHTS, axis=-1, keepdims=True))
    else:
        converted = tf.cond(is_grey, lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                            lambda: images[..., :3])
    return tf.ensure_shape(converted, [None, None, None, channels])


def preprocess_images(images, image_size, channels):
    """uint8 (B, H, W, C_in) -> float32 (B, S, S, channels) in [0, 1], as in training.

    Args:
      images: uint8 tensor or array (B, H, W, C_in), C_in in 1..4.
      image_size: S, the model's input side in pixels.
      channels: the model's channels, 1 or 3.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(f"images must be uint8 pixels in [0, 255], got dtype {images.dtype.name}")
    pixels = convert_channels(tf.cast(images, tf.float32), channels)
    same_size = tf.reduce_all(tf.shape(pixels)[1:3] == image_size)
    pixels = tf.cond(same_size, lambda: pixels,
                     lambda: tf.image.resize(pixels, [image_size, image_size], antialias=True))
    pixels = tf.clip_by_value(tf.round(pixels), 0.0, 255.0)
    return tf.ensure_shape(pixels / 255.0, [None, image_size, image_size, channels])


def feature_to_input_pixels(positions, stride, image_size, input_height, input_width):
    """(y, x) feature-map pixels -> (y, x) pixels of the original input image.

    Feature pixel p covers model-input pixels [p*stride, (p+1)*stride - 1], centre
    q = p*stride + (stride - 1)/2; the resize maps model pixel q to input pixel
    (q + 0.5) * input_size / image_size - 0.5 (pixel centres at integers in all three).

    Args:
      positions: float32 (B, N, 2) feature-map pixels.
      stride: `ModelConfig.feature_stride`.
      image_size: S, the model's input side.
      input_height, input_width: scalars or (B,) tensors, input image sizes in pixels.

    Returns:
      float32 (B, N, 2).
    """
    model_pixels = positions * float(stride) + (stride - 1) / 2.0
    return model_to_input_pixels(model_pixels, image_size, input_height, input_width)


def model_to_input_pixels(positions, image_size, input_height, input_width):
    """(y, x) pixels of the S x S model input -> pixels of the H x W input image.

    (q + 0.5) * size / S - 0.5 per axis (pixel centres at integers); identity when H = W = S.

    Args:
      positions: float32 (B, N, 2).
      image_size: S.
      input_height, input_width: scalars or (B,) tensors.

    Returns:
      float32 (B, N, 2).
    """
    positions = tf.convert_to_tensor(positions, tf.float32)
    size = tf.cast(tf.stack([input_height, input_width], axis=-1), tf.float32)
    scale = size / float(image_size)
    if scale.shape.rank == 2:  # one size per image
        scale = scale[:, None, :]
    return (positions + 0.5) * scale - 0.5


def top_k_count(num_classes):
    """k of `top_classes`: min(5, classes)."""
    return min(MAX_TOP_CLASSES, num_classes)


# ---------------------------------------------------------------------------------------------
# SavedModel


def _check_model(model, config):
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a keypoint_gnn.ModelConfig, got {type(config).__name__}")
    expected = (None, config.image_size, config.image_size, config.channels)
    if tuple(model.input_shape) != expected:
        raise ValueError(f"model input shape {model.input_shape} does not match config "
                         f"(image_size={config.image_size}, channels={config.channels}): "
                         f"expected {expected}")
    if model.output_shape[-1] != config.num_classes:
        raise ValueError(f"model outputs {model.output_shape[-1]} classes but config has "
                         f"num_classes={config.num_classes}")
    try:
        model.get_layer("detector")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'detector': only keypoint "
                         "classifiers from keypoint_gnn.build_classifier can be exported") from None


def inference_model(model):
    """images float32 (B, S, S, C) -> [logits (B, classes), positions (B, N, 2) feature-map
    pixels, scores (B, N)]: the classifier and its detector in one pass."""
    positions, scores = model.get_layer("detector").output[:2]
    return keras.Model(model.inputs, [model.outputs[0], positions, scores],
                       name=f"{model.name}_inference")


class ServingModule(tf.Module):
    """The classifier with in-graph preprocessing, as TF Serving signatures.

    Tracks only the model's variables (Spektral layers break tf_keras's layer serialisation);
    the Keras model itself is reached through a closure, never an attribute.
    """

    def __init__(self, model, config):
        super().__init__(name="keypoint_gnn_serving")
        _check_model(model, config)
        self.model_variables = list(model.variables)
        network = inference_model(model)
        size, channels, stride = config.image_size, config.channels, config.feature_stride
        k = top_k_count(config.num_classes)

        def predict(pixels, heights, widths):
            logits, positions, scores = network(pixels, training=False)
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            return {
                "probabilities": probabilities,
                "top_classes": tf.math.top_k(probabilities, k=k).indices,
                "keypoints": feature_to_input_pixels(tf.cast(positions, tf.float32), stride,
                                                     size, heights, widths),
                "keypoint_scores": tf.cast(scores, tf.float32),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8,
                                                    name="images")])
        def serve_pixels(images):
            shape = tf.shape(images)
            return predict(preprocess_images(images, size, channels), shape[1], shape[2])

        def decode_one(encoded):
            image = tf.io.decode_image(encoded, expand_animations=False)  # uint8 (H, W, C)
            image_shape = tf.shape(image)
            pixels = preprocess_images(image[None], size, channels)[0]
            return pixels, image_shape[0], image_shape[1]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            pixels, heights, widths = tf.map_fn(
                decode_one, image_bytes,
                fn_output_signature=(tf.TensorSpec([size, size, channels], tf.float32),
                                     tf.int32, tf.int32))
            return predict(pixels, heights, widths)

        self.serve_pixels = serve_pixels
        self.serve_bytes = serve_bytes

    def signatures(self):
        return {SERVING_DEFAULT: self.serve_pixels.get_concrete_function(),
                SERVING_BYTES: self.serve_bytes.get_concrete_function()}


def list_versions(model_dir):
    """Integer version directories of `model_dir` (TF Serving's `<base>/<name>`), ascending.

    Names that are not plain non-negative integers (temporary '.tmp-*' exports, files) are
    ignored, as TF Serving ignores them.
    """
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir()
                  if entry.is_dir() and entry.name.isdigit() and entry.name.isascii())


def resolve_version_dir(path):
    """`saved_models/<name>` -> its newest version directory; a version directory as is.

    Raises:
      FileNotFoundError: `path` does not exist, or holds neither a saved_model.pb nor an
        integer version directory.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist")
    if (path / "saved_model.pb").is_file():
        return path
    versions = list_versions(path)
    if not versions:
        raise FileNotFoundError(
            f"model directory {str(path)!r} has no integer version directory (expected "
            f"{path!s}/1/saved_model.pb, TF Serving's layout) and no saved_model.pb")
    version_dir = path / str(versions[-1])
    if not (version_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"version directory {str(version_dir)!r} has no saved_model.pb")
    return version_dir


def _export_info(config, class_names, name, version=None):
    return {
        "name": name,
        "version": version,
        "class_names": list(class_names) if class_names is not None else None,
        "config": config.to_dict(),
        "signatures": {
            SERVING_DEFAULT: {"input": INPUT_KEYS[SERVING_DEFAULT],
                              "dtype": "uint8", "shape": [None, None, None, None]},
            SERVING_BYTES: {"input": INPUT_KEYS[SERVING_BYTES], "dtype": "string",
                            "shape": [None]},
        },
        "outputs": {
            "probabilities": "float32 (B, classes)",
            "top_classes": f"int32 (B, {top_k_count(config.num_classes)})",
            "keypoints": "float32 (B, N, 2) (y, x) in input-image pixels",
            "keypoint_scores": "float32 (B, N)",
        },
    }


def _check_class_names(class_names, config):
    if class_names is None:
        return None
    class_names = [str(name) for name in class_names]
    if len(class_names) != config.num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the model has "
                         f"num_classes={config.num_classes}")
    for class_name in class_names:
        if "\n" in class_name:
            raise ValueError(f"class name {class_name!r} contains a newline")
    return class_names


def _check_name(name):
    if not isinstance(name, str) or not name or name.startswith((".", "tmp-")) \
            or os.sep in name or name in ("..",) or not name.isprintable():
        raise ValueError(f"name={name!r} must be a non-empty directory name, without '/', not "
                         "starting with '.' or 'tmp-'")


def write_saved_model(model, config, directory, *, class_names=None):
    """Writes the serving SavedModel and `labels.txt` into `directory` (not atomic:
    `export_saved_model` calls it on a temporary directory)."""
    class_names = _check_class_names(class_names, config)
    module = ServingModule(model, config)
    directory = pathlib.Path(directory)
    tf.saved_model.save(module, str(directory), signatures=module.signatures())
    if class_names is not None:
        (directory / LABELS_FILE).write_text("".join(f"{n}\n" for n in class_names))
    return directory


def export_saved_model(model, config, base_dir="saved_models", name="keypoint_gnn",
                       class_names=None):
    """Exports `model` as the next version of `base_dir/<name>/`, atomically.

    The SavedModel is written to `base_dir/<name>/.tmp-*` and renamed to
    `base_dir/<name>/<version>` only when complete, so TF Serving (which polls the directory)
    never loads a half-written version; on failure the temporary directory is removed.
    Version = largest existing integer version + 1, starting at 1; a concurrent export that
    takes the same number first makes this one move on to the next.

    Args:
      model: classifier from `keypoint_gnn.build_classifier(config)`: float32 (B, S, S, C) in
        [0, 1] -> logits (B, classes).
      config: its `ModelConfig`.
      base_dir: TF Serving's model base path.
      name: model name (TF Serving's MODEL_NAME).
      class_names: optional list of `config.num_classes` names, written to `labels.txt`.

    Returns:
      pathlib.Path of the version directory.
    """
    _check_name(name)
    class_names = _check_class_names(class_names, config)
    model_dir = pathlib.Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        write_saved_model(model, config, staging, class_names=class_names)
        for _ in range(100):
            version = max(list_versions(model_dir), default=0) + 1
            info = _export_info(config, class_names, name, version)
            (staging / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            target = model_dir / str(version)
            try:
                # os.rename onto an existing (non-empty) directory fails on POSIX: no overwrite.
                os.rename(staging, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        raise RuntimeError(f"could not claim a new version number in {str(model_dir)!r}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_export_info(version_dir):
    """The `export.json` of an exported version (class names, config), or {} if absent."""
    path = pathlib.Path(version_dir) / EXPORT_INFO_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# TFLite


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


def export_tflite(model, config, path, quantize="none", representative_images=None):
    """Writes `model` as a TFLite model (dynamic batch), and class names/config next to it.

    Args:
      model: classifier from `keypoint_gnn.build_classifier(config)`.
      config: its `ModelConfig`.
      path: the `.tflite` file; `<path>.json` gets the config (and class names, see
        `write_tflite_info`).
      quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
        float activations) or "int8": int8 weights and activations, calibrated on
        `representative_images`, for the convolutions and dense layers (`INT8_OPS`, nearly all
        the weights and compute); keypoint selection, graph building and scatter stay float32
        (quantised, they took accuracy to chance); float32 input and output tensors, so every
        variant takes the same input.
      representative_images: float32 (B, S, S, C) in [0, 1]; required for "int8".

    Returns:
      pathlib.Path of the written file. The model's signature `serving_default` takes
      `images` float32 (B, S, S, C) in [0, 1], any batch B (every quantisation; the input's
      `shape_signature` is (-1, S, S, C): resize the input tensor to (B, S, S, C) and allocate
      tensors before setting it, or call the signature runner, which does both) and returns
      `logits` (B, classes), `probabilities` (B, classes), `keypoints` (B, N, 2) (y, x) in
      model-input pixels and `keypoint_scores` (B, N).
    """
    flat_buffer = convert_tflite(model, config, quantize, representative_images)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".tmp-{path.name}")
    partial.write_bytes(flat_buffer)
    os.replace(partial, path)
    write_tflite_info(path, config, quantize=quantize)
    return path


def tflite_info_path(path):
    return pathlib.Path(f"{path}.json")


def write_tflite_info(path, config, *, quantize="none", class_names=None):
    """Writes `<path>.json`: config, quantisation, class names (None keeps those written)."""
    info_path = tflite_info_path(path)
    previous = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if class_names is None:
        class_names = previous.get("class_names")
    info = {"config": config.to_dict(), "quantize": quantize,
            "class_names": _check_class_names(class_names, config)}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info_path


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
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if config is None:
            if "config" not in info:
                raise FileNotFoundError(f"{str(info_path)!r} (the model's config) does not "
                                        "exist: pass config=ModelConfig(...)")
            config = ModelConfig.from_dict(info["config"])
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


__all__ = [
    "QUANTIZATIONS",
    "SIGNATURES",
    "ServingModule",
    "TFLiteClassifier",
    "convert_tflite",
    "export_saved_model",
    "export_tflite",
    "feature_to_input_pixels",
    "list_versions",
    "model_to_input_pixels",
    "preprocess_images",
    "read_export_info",
    "resolve_version_dir",
    "run_tflite",
]
