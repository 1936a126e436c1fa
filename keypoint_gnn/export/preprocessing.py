"""Preprocessing and keypoint units, shared by the SavedModel graph and the TFLite helper.

Preprocessing repeats the training pipeline's (`keypoint_gnn.data.pipeline`): channels
converted (grey <-> RGB, alpha dropped), a bilinear antialiased resize to `config.image_size`
when the size differs, rounding to whole uint8 values, then division by 255.
"""
from __future__ import annotations

from keypoint_gnn._backend import tf

MAX_TOP_CLASSES = 5
_LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601, as the data pipeline and TF use


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
