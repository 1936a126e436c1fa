"""TF Serving SavedModel export: version directories, signatures, `export.json`.

SavedModel (TF Serving layout `base_dir/<name>/<version>/`, integer versions) with two
signatures that return the same dict:

  serving_default  images       uint8 (B, H, W, C), any H and W, C = 1..4
  serving_bytes    image_bytes  string (B,), encoded JPEG / PNG / GIF / BMP, sizes may differ
  ->  probabilities    float32 (B, classes)   softmax of the logits
      top_classes      int32   (B, k)         class indices, best first, k = min(5, classes)
      keypoints        float32 (B, N, 2)      (y, x) in pixels of the INPUT image
      keypoint_scores  float32 (B, N)

Preprocessing lives inside the graph and repeats the training pipeline's (see
`keypoint_gnn.export.preprocessing`).

The export goes through a `tf.Module` whose `tf.function`s close over the Keras model and which
tracks only `model.variables`: tf_keras's own SavedModel serialisation fails on Spektral's layers
(see shared DESIGN notes).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import ModelConfig
from keypoint_gnn.export.checks import check_export_name, check_finite_weights
from keypoint_gnn.export.files import (
    clean_stale,
    dumps_strict,
    make_readable,
    make_staging_dir,
)
from keypoint_gnn.export.preprocessing import (
    feature_to_input_pixels,
    preprocess_images,
    top_k_count,
)
from keypoint_gnn.export.signatures import INPUT_KEYS, SERVING_BYTES, SERVING_DEFAULT

EXPORT_INFO_FILE = "export.json"
LABELS_FILE = "labels.txt"


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
    check_finite_weights(model)


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

    Nothing is written when the name (`check_export_name`), the model, its weights (a NaN or
    an infinity: a diverged model, `check_finite_weights`) or the class names are invalid:
    ValueError saying why.

    The SavedModel is written to `base_dir/<name>/.tmp-<pid>@<host>@*` and renamed to
    `base_dir/<name>/<version>` only when complete, so TF Serving (which polls the directory)
    never loads a half-written version; on failure the temporary directory is removed, and the
    temporary directories of exports killed before their rename are removed by the next export
    to `base_dir/<name>/` (the rule: `keypoint_gnn.export.files`). The version's folders and
    files get the modes of a plain mkdir / open under the umask (0o755 / 0o644 under umask
    022), so a server running as another user reads them. Version = largest existing integer
    version + 1, starting at 1; a concurrent export that takes the same number first makes this
    one move on to the next.

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
    check_export_name(name)
    class_names = _check_class_names(class_names, config)
    _check_model(model, config)
    model_dir = pathlib.Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(model_dir, select=lambda entry: entry.is_dir())
    staging = make_staging_dir(model_dir)
    try:
        write_saved_model(model, config, staging, class_names=class_names)
        for _ in range(100):
            version = max(list_versions(model_dir), default=0) + 1
            info = _export_info(config, class_names, name, version)
            (staging / EXPORT_INFO_FILE).write_text(dumps_strict(info, EXPORT_INFO_FILE))
            make_readable(staging)
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
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not JSON ({error})") from None
    if not isinstance(info, dict):
        raise ValueError(  # noqa: TRY004  (a bad file, not a bad argument)
            f"{str(path)!r} must hold a JSON object, not {type(info).__name__}")
    return info
