"""Selects tf_keras (Keras 2) as `tf.keras` before TensorFlow's lazy loader resolves it.

Spektral 1.3.1 works only with Keras 2 APIs, so the package sets `TF_USE_LEGACY_KERAS=1`
before anything touches `tf.keras`, and refuses to run on Keras 3 rather than fail later with
an obscure error inside a Spektral layer.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def check_legacy_keras() -> None:
    """Raises RuntimeError when `tf.keras` was already loaded as Keras 3."""
    import tf_keras

    if tf.keras.Model is not tf_keras.Model:
        version = getattr(tf.keras, "__version__", "unknown version")
        raise RuntimeError(
            f"tf.keras resolves to Keras {version}, but keypoint_gnn needs tf_keras "
            "(Keras 2) because Spektral does not support Keras 3. Import keypoint_gnn before "
            "anything touches tf.keras, or set TF_USE_LEGACY_KERAS=1 in the environment."
        )


check_legacy_keras()

import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "check_legacy_keras"]
