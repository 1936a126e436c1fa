"""Selects tf_keras (Keras 2) as `tf.keras` before TensorFlow's lazy loader resolves it.

Spektral 1.3.1 works only with Keras 2 APIs, so the package sets `TF_USE_LEGACY_KERAS=1`
before anything touches `tf.keras`, and refuses to run on Keras 3 rather than fail later with
an obscure error inside a Spektral layer.
"""
import contextlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# 3: no native INFO, WARNING or ERROR lines; on a CPU machine they are all noise ("failed call
# to cuInit", oneDNN notes). Failures still raise Python exceptions; set it to 0 to see them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_silenced():
    """TensorFlow's native libraries log at load time, before absl logging is initialised, so
    TF_CPP_MIN_LOG_LEVEL cannot silence them ("oneDNN custom operations are on", "Could not
    find cuda drivers" on a CPU machine). Their stderr is muted while TensorFlow loads, unless
    TF_CPP_MIN_LOG_LEVEL=0 asks for everything. Python errors still surface as exceptions."""
    stderr_fd = 2  # where native code writes, whatever Python's sys.stderr is
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(stderr_fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stderr_fd)
    try:
        yield
    finally:
        os.dup2(saved, stderr_fd)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import tensorflow as tf


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
