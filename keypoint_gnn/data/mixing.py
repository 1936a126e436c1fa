"""Mixup and CutMix: a training batch mixed with itself in reverse order.

    mixup  (Zhang et al. 2018): x = lam * x_i + (1 - lam) * x_j,  y = lam * y_i + (1 - lam) * y_j
    cutmix (Yun et al. 2019):   x = x_i with a box pasted from x_j, y weighted by the box's area:
                                lam = 1 - box area / image area

with lam ~ Beta(alpha, alpha) drawn once per batch and j = B - 1 - i (the batch reversed).
With both enabled, each batch takes one of the two at random. Randomness is stateless, drawn
from a per-batch seed pair, so a run is repeatable.
"""
from __future__ import annotations

import dataclasses

from keypoint_gnn._backend import tf


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Batch mixing of the training split: `mixup` and `cutmix` are the Beta(alpha, alpha)
    parameters, 0 turns each off."""

    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name}={value!r} must be a number >= 0 (0 turns it off)")

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def sample_beta(seed_pair, alpha: float):
    """One draw of Beta(alpha, alpha) (a scalar float32), as G1 / (G1 + G2) of two Gammas."""
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    first = tf.random.stateless_gamma([], seeds[0], alpha)
    second = tf.random.stateless_gamma([], seeds[1], alpha)
    return first / (first + second)


def mixup(images, labels, lam):
    """images (B, H, W, C), labels (B, K) float -> both mixed with the batch reversed, lam ()."""
    lam = tf.cast(lam, images.dtype)
    return (lam * images + (1 - lam) * tf.reverse(images, [0]),
            lam * labels + (1 - lam) * tf.reverse(labels, [0]))


def cutmix_box(seed_pair, lam, height, width):
    """The pasted box (y0, x0, y1, x1), int32 pixel bounds (end exclusive): sides
    sqrt(1 - lam) of the image's, centre uniform over the image, clipped at its edges."""
    ratio = tf.sqrt(1.0 - lam)
    box_h = tf.cast(tf.round(ratio * tf.cast(height, tf.float32)), tf.int32)
    box_w = tf.cast(tf.round(ratio * tf.cast(width, tf.float32)), tf.int32)
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    centre_y = tf.random.stateless_uniform([], seeds[0], 0, height, dtype=tf.int32)
    centre_x = tf.random.stateless_uniform([], seeds[1], 0, width, dtype=tf.int32)
    y0 = tf.clip_by_value(centre_y - box_h // 2, 0, height)
    x0 = tf.clip_by_value(centre_x - box_w // 2, 0, width)
    y1 = tf.clip_by_value(centre_y - box_h // 2 + box_h, 0, height)
    x1 = tf.clip_by_value(centre_x - box_w // 2 + box_w, 0, width)
    return tf.stack([y0, x0, y1, x1])


def cutmix(images, labels, box):
    """images (B, H, W, C), labels (B, K) float, box from `cutmix_box` -> the batch with the
    box pasted from the batch reversed, labels weighted by the pasted area."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows >= box[0]) & (rows < box[2]))[:, None] & ((cols >= box[1]) & (cols < box[3]))
    mask = tf.cast(inside, images.dtype)[None, :, :, None]
    pasted = tf.reduce_sum(mask) / tf.cast(height * width, images.dtype)
    mixed = images * (1 - mask) + tf.reverse(images, [0]) * mask
    lam = tf.cast(1 - pasted, labels.dtype)
    return mixed, lam * labels + (1 - lam) * tf.reverse(labels, [0])


def mix_batch(images, labels, seed_pair, mixing: Mixing):
    """A batch (images (B, H, W, C) float, labels (B, K) one-hot float) mixed as `mixing` says,
    random in `seed_pair` (2,) int64."""
    seeds = tf.random.experimental.stateless_split(seed_pair, num=3)

    def with_mixup():
        return mixup(images, labels, sample_beta(seeds[1], mixing.mixup))

    def with_cutmix():
        lam = sample_beta(seeds[1], mixing.cutmix)
        return cutmix(images, labels, cutmix_box(seeds[2], lam, tf.shape(images)[1],
                                                 tf.shape(images)[2]))

    if mixing.mixup > 0 and mixing.cutmix > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[0]) < 0.5
        return tf.cond(use_cutmix, with_cutmix, with_mixup)
    return with_cutmix() if mixing.cutmix > 0 else with_mixup()
