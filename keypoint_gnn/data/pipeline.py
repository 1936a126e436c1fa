"""The tf.data pipeline from a source split to model batches.

    (image uint8 (H, W, C_source), label)
      -> resize to (S, S) (stretching non-square images), convert channels to C, uint8
      -> cache (uint8: 4x smaller than float32; in memory, or files `keypoint_gnn.data.cache`
         wrote, reused by later runs)
      -> [training] shuffle (seeded, reshuffled each epoch)
      -> float32 in [0, 1]
      -> [training] augmentation: pad by `crop_padding` (reflect) and crop back to S at a random
         offset, or a random resized crop (a random area and aspect ratio, resized to S);
         random horizontal flip (optional: flips can change a class)
      -> batch, [training, classify: mixup / cutmix of each batch with itself reversed, labels
         one-hot float32 (`keypoint_gnn.data.mixing`)], [reconstruct: (images, images)], prefetch

Augmentation randomness is stateless and derived from the seed, so a run is repeatable.
"""
from __future__ import annotations

import dataclasses
import math

from keypoint_gnn._backend import tf
from keypoint_gnn.data.mixing import Mixing, mix_batch

TASKS = ("classify", "reconstruct")
_SHUFFLE_BUFFER = 20_000
# Random resized crop: the crop's share of the image area and its aspect ratio (width / height),
# as torchvision's RandomResizedCrop but with a larger smallest area (0.35, not 0.08), which
# suits images of a few dozen pixels (fastai's Imagenette recipes use 0.35 as well).
RESIZED_CROP_AREA = (0.35, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation.

    Attributes:
      flip: random horizontal flip with probability 1/2.
      crop_padding: pad this many pixels on each side (reflect), then crop back to the image
        size at a uniformly random offset; 0 turns cropping off. None means `image_size // 12`.
      resized_crop: a random resized crop instead (area share in `RESIZED_CROP_AREA`, aspect
        ratio in `RESIZED_CROP_RATIO`, log-uniform), resized back to the image size; needs
        crop_padding 0.
    """

    flip: bool = True
    crop_padding: int | None = None
    resized_crop: bool = False

    def __post_init__(self):
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding={self.crop_padding} must be >= 0 or None")
        if self.resized_crop and self.crop_padding != 0:
            raise ValueError("resized_crop=True needs crop_padding=0 (one crop or the other)")

    @property
    def enabled(self) -> bool:
        return self.flip or self.crop_padding != 0 or self.resized_crop

    def resolved(self, image_size: int) -> Augmentation:
        """The same with `crop_padding` in pixels: None becomes `image_size // 12`."""
        padding = image_size // 12 if self.crop_padding is None else self.crop_padding
        return Augmentation(self.flip, min(padding, image_size - 1), self.resized_crop)

    def words(self) -> str:
        """The `augment` string that gives this augmentation ("flip,resized_crop", "none")."""
        words = (["flip"] if self.flip else []) + (["crop"] if self.crop_padding != 0 else []) + (
            ["resized_crop"] if self.resized_crop else [])
        return ",".join(words) or "none"

    @classmethod
    def parse(cls, augment, flip_invariant: bool) -> Augmentation:
        """An `Augmentation` from `load_dataset(augment=...)`.

        Args:
          augment: True (the source's default: crop, plus flip when `flip_invariant`), False
            (none), an `Augmentation`, or a string of comma-separated words "flip", "crop",
            "resized_crop" (not with "crop"), or "none".
          flip_invariant: whether a horizontal flip keeps the source's classes.
        """
        if isinstance(augment, cls):
            return augment
        if augment is True:
            return cls(flip=flip_invariant)
        if augment is False or augment is None:
            return cls(flip=False, crop_padding=0)
        if isinstance(augment, str):
            words = {word.strip() for word in augment.lower().split(",") if word.strip()}
            if (words <= {"flip", "crop", "resized_crop"} and len(words & {"crop", "resized_crop"}) < 2
                    or words == {"none"}):
                return cls(flip="flip" in words, crop_padding=None if "crop" in words else 0,
                           resized_crop="resized_crop" in words)
        raise ValueError(f"augment={augment!r} must be True, False, an Augmentation, or a "
                         "comma-separated string of 'flip', 'crop', 'resized_crop' (not both "
                         "crops), or 'none'")


_LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601, as tf.image.rgb_to_grayscale


def _convert_channels(image, channels: int):
    """float32 (H, W, C_source) -> (H, W, channels): grey <-> RGB, alpha dropped.

    C_source 1 or 2 is grey (plus alpha), 3 or 4 RGB (plus alpha). Both branches of each
    `tf.cond` trace for any C_source, since sources may not know it statically.
    """
    is_grey = tf.shape(image)[-1] <= 2
    if channels == 1:
        converted = tf.cond(
            is_grey, lambda: image[..., :1],
            lambda: tf.reduce_sum(image[..., :3] * _LUMA_WEIGHTS, axis=-1, keepdims=True))
    else:
        converted = tf.cond(is_grey, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                            lambda: image[..., :3])
    return tf.ensure_shape(converted, [None, None, channels])


def _to_model_size(image, image_size: int, channels: int):
    """uint8 (H, W, C_source) -> uint8 (S, S, channels); bilinear, antialiased when shrinking."""
    image = _convert_channels(tf.cast(tf.ensure_shape(image, [None, None, None]), tf.float32),
                              channels)
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == image_size), lambda: image,
        lambda: tf.image.resize(image, [image_size, image_size], antialias=True))
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.ensure_shape(image, [image_size, image_size, channels])


def resized_crop_box(seed_pair, area=RESIZED_CROP_AREA, ratio=RESIZED_CROP_RATIO):
    """A random crop box (4,) float32 (y0, x0, y1, x1) in [0, 1] image coordinates (those of
    `tf.image.crop_and_resize`): area share uniform in `area`, aspect ratio (width / height)
    log-uniform in `ratio`, each side capped at the whole image, position uniform."""
    seeds = tf.random.experimental.stateless_split(seed_pair, num=4)
    share = tf.random.stateless_uniform([], seeds[0], area[0], area[1])
    aspect = tf.exp(tf.random.stateless_uniform([], seeds[1], math.log(ratio[0]),
                                                math.log(ratio[1])))
    height = tf.minimum(tf.sqrt(share / aspect), 1.0)
    width = tf.minimum(tf.sqrt(share * aspect), 1.0)
    y0 = tf.random.stateless_uniform([], seeds[2]) * (1.0 - height)
    x0 = tf.random.stateless_uniform([], seeds[3]) * (1.0 - width)
    return tf.stack([y0, x0, y0 + height, x0 + width])


def _augment(image, seed_pair, augmentation: Augmentation, image_size: int):
    """float32 (S, S, C) -> float32 (S, S, C), random in `seed_pair` (2,) int64."""
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    padding = augmentation.resolved(image_size).crop_padding  # < image_size, as REFLECT needs
    if padding > 0:
        padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[0])
    if augmentation.resized_crop:
        box = resized_crop_box(seeds[0])
        image = tf.image.crop_and_resize(image[None], box[None], [0], [image_size, image_size])[0]
    if augmentation.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def build_pipeline(examples: tf.data.Dataset, *, image_size: int, channels: int,
                   batch_size: int, training: bool, augmentation: Augmentation, seed: int,
                   task: str = "classify", mixing: Mixing | None = None,
                   num_classes: int | None = None, cache=None) -> tf.data.Dataset:
    """Batches for a model from one source split.

    Args:
      examples: dataset of (image uint8 (H, W, C_source), label int32 ()).
      image_size: side S of the square output images in pixels.
      channels: output channels C, 1 or 3 (greyscale <-> RGB converted, alpha dropped).
      batch_size: examples per batch; the last batch may be smaller.
      training: shuffle and augment (validation and test keep their order).
      augmentation: what `training` applies.
      seed: seed of the shuffle and the augmentation.
      task: "classify" -> (images, labels); "reconstruct" -> (images, images).
      mixing: `Mixing` of the `training` batches (classify only); labels become one-hot
        float32 (B, num_classes) weights when it is enabled.
      num_classes: K, needed by `mixing`.
      cache: a function from the dataset of resized (uint8 image, label) examples to a cached
        one (`keypoint_gnn.data.cache.FileCache`); None caches in memory.

    Returns:
      Dataset of (images float32 (B, S, S, C) in [0, 1], labels int32 (B,) or float32
      (B, K) when mixed) or (images, images).
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {TASKS}")
    mixing = mixing or Mixing()
    if mixing.enabled and task != "classify":
        raise ValueError(f"mixup / cutmix mix class labels; task={task!r} has none")
    if mixing.enabled and not num_classes:
        raise ValueError("mixup / cutmix need num_classes")
    dataset = examples.map(
        lambda image, label: (_to_model_size(image, image_size, channels), label),
        num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.cache() if cache is None else cache(dataset)
    if training:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda image, label: (tf.image.convert_image_dtype(image, tf.float32),
                                                label), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation.enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda example, seed_pair: (
                _augment(example[0], seed_pair, augmentation, image_size), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size)
    if training and mixing.enabled:
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, seed_pair: mix_batch(
                batch[0], tf.one_hot(batch[1], num_classes), seed_pair, mixing),
            num_parallel_calls=tf.data.AUTOTUNE)
    if task == "reconstruct":
        dataset = dataset.map(lambda images, labels: (images, images))
    return dataset.prefetch(tf.data.AUTOTUNE)
