"""`load_dataset`: a data set spec in, batched tf.data splits (train, validation, test, and
test_unseen with held-out classes) and their description out."""
from __future__ import annotations

import dataclasses
import hashlib
import numbers
import os
import pathlib

import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.data.cache import FileCache
from keypoint_gnn.data.checks import check_source
from keypoint_gnn.data.holdout import check_holdout_classes, hold_out_classes
from keypoint_gnn.data.mixing import Mixing
from keypoint_gnn.data.pipeline import TASKS, Augmentation, build_pipeline
from keypoint_gnn.data.sources import open_source
from keypoint_gnn.data.splitting import check_fractions


@dataclasses.dataclass
class DatasetInfo:
    """What a loaded data set holds.

    Attributes:
      name: the spec it was loaded from ("builtin", "builtin:num_classes=10", "folder:PATH",
        "cifar10", ...).
      num_classes: number of classes.
      class_names: one name per class index.
      image_size: side S of the square images the splits yield, in pixels.
      channels: channels C of those images, 1 or 3.
      num_examples: {"train": n, "validation": n, "test": n}, and "test_unseen": n with
        held-out classes.
      split_origin: {split: where its examples come from}, in words.
      augmentation: what the train split applies, crop padding in pixels
        (`Augmentation(flip=False, crop_padding=0)` for none).
      flip_invariant: whether a horizontal flip keeps the classes (flip test-time augmentation
        is then safe).
      mixing: the train split's mixup / cutmix (`Mixing()` for none); its labels are one-hot
        float32 (B, K) when enabled.
      cache: "memory", or the folder of the decoded images' cache files.
      skipped_files: image files left out because they could not be decoded, with the reason.
      warnings: what loading logged as usable but lopsided, one line each: splits without
        images of some classes (`keypoint_gnn.data.checks`).
      holdout_classes: names of the classes held out of train, validation and test (their
        images are the test_unseen split); [] for none.
    """

    name: str
    num_classes: int
    class_names: list[str]
    image_size: int
    channels: int
    num_examples: dict[str, int]
    split_origin: dict[str, str] = dataclasses.field(default_factory=dict)
    augmentation: Augmentation = dataclasses.field(default_factory=Augmentation)
    flip_invariant: bool = True
    mixing: Mixing = dataclasses.field(default_factory=Mixing)
    cache: str = "memory"
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    holdout_classes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Splits:
    """The splits, batched.

    Attributes:
      train: shuffled and augmented batches of (images float32 (B, S, S, C) in [0, 1],
        labels int32 (B,), or one-hot float32 (B, K) weights with mixup / cutmix); (images,
        images) for task="reconstruct".
      validation: the same, in a fixed order, not augmented.
      test: the same, in a fixed order, not augmented; row i is `test_parts[i]`'s image.
      info: `DatasetInfo`.
      test_parts: builtin only: (n_test, P, 2) float32 (y, x) part centres in pixels of the
        S x S images (pixel (i, j) centred at (i, j)); None for other sources.
      test_unseen: with `load_dataset(holdout_classes=K)`, K > 0: every image of the held-out
        classes (from train, validation and test, in that order), batched as `test`; else None.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: DatasetInfo
    test_parts: np.ndarray | None = None
    test_unseen: tf.data.Dataset | None = None


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def load_dataset(
    name: str = "builtin",
    *,
    image_size: int = 48,
    batch_size: int = 64,
    seed: int = 0,
    data_dir: str | None = None,
    channels: int | None = None,
    augment=True,
    task: str = "classify",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_examples: int | None = None,
    builtin_options=None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    cache: str = "memory",
    holdout_classes: int = 0,
) -> Splits:
    """Loads a data set as train / validation / test tf.data pipelines.

    Args:
      name: "builtin" (generated, the default), "builtin:KEY=VALUE,..." (the same with
        `BuiltinOptions` fields set, e.g. "builtin:max_rotation_degrees=45,scale_range=0.4-0.8"),
        "folder:PATH", "idx:PATH", or a prepared TensorFlow Datasets name (see
        `keypoint_gnn.data.sources`).
      image_size: side S in pixels of the square images produced (sources are resized, and
        non-square images stretched); the built-in set is drawn at this size, >= 24.
      batch_size: examples per batch, >= 1.
      seed: seed of generation, carved splits, subsets, shuffling and augmentation.
      data_dir: TFDS data folder (default ~/tensorflow_datasets); nothing is downloaded.
      channels: None keeps the source's channels; 1 or 3 converts greyscale <-> RGB.
      augment: True (crop, and flip where flips keep classes: not for "builtin", IDX files or
        digit sets), False, an `Augmentation`, or comma-separated words of "flip", "crop",
        "resized_crop" (random resized crop, for photos), or "none".
      task: "classify" yields (images, labels), "reconstruct" yields (images, images).
      validation_fraction: fraction of the training pool carved for validation when the
        source has no validation split, in (0, 1).
      test_fraction: the same for a missing test split, in (0, 1); the two sum below 1.
      max_examples: cap on each split's examples (a seeded subset), or None.
      builtin_options: `keypoint_gnn.data.builtin.BuiltinOptions` for name="builtin"; an error
        with any other name, "builtin:KEY=VALUE,..." included (that spec sets the options).
      mixup, cutmix: Beta(alpha, alpha) parameters of the train batches' mixing (0 off;
        `keypoint_gnn.data.mixing`); task="classify" only.
      cache: "memory" keeps the decoded images at training size in memory; a folder path keeps
        them in files there that later runs on the same data, size, channels and split reuse
        (`keypoint_gnn.data.cache`).
      holdout_classes: K >= 0 classes, drawn with `seed` among those with training images (after
        `max_examples`), removed from train, validation and test; all their images, from every
        split, form `Splits.test_unseen` (`keypoint_gnn.data.holdout`). task="reconstruct"
        only; at least 2 classes must keep training images.

    Returns:
      `Splits`.

    Raises:
      ValueError: a bad argument or spec, a malformed file, or no decodable images; the
        message names the value. Also, before any pipeline is built, a data set that cannot
        train `task` (`keypoint_gnn.data.checks`): an empty split; for task="classify", fewer
        than two classes, or a class with no training images (too few images for the carved
        splits, or present only in a given validation / test split); the message names the
        class or split and the counts. For holdout_classes > 0: task="classify", a source
        that cannot tell its examples' classes (TFDS), too few classes with training images, or
        a validation / test split made only of held-out classes.
      FileNotFoundError: a missing path or file, or a TFDS data set not prepared in data_dir.
    """
    _check_int("image_size", image_size, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    if max_examples is not None:
        _check_int("max_examples", max_examples, 1)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r} must be None (keep the source's), 1 or 3")
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {TASKS}")
    check_fractions(validation_fraction, test_fraction)
    mixing = Mixing(mixup, cutmix)
    if mixing.enabled and task != "classify":
        raise ValueError(f"mixup={mixup}, cutmix={cutmix}: batch mixing mixes class labels; "
                         f"task={task!r} has none (set both to 0)")
    check_holdout_classes(holdout_classes, task)
    cache_folder = _check_cache(cache)

    source = open_source(name, image_size=image_size, seed=seed, data_dir=data_dir,
                         validation_fraction=validation_fraction, test_fraction=test_fraction,
                         max_examples=max_examples, builtin_options=builtin_options)
    warnings = check_source(source, task=task, max_examples=max_examples)
    held_out = hold_out_classes(source, holdout_classes, seed)
    source = held_out.source
    source_splits = dict(source.splits)
    if held_out.unseen is not None:
        source_splits["test_unseen"] = held_out.unseen
    augmentation = Augmentation.parse(augment, source.flip_invariant).resolved(image_size)
    channels = channels or source.channels
    pipelines = {
        split: build_pipeline(
            source_split.examples, image_size=image_size, channels=channels,
            batch_size=batch_size, training=split == "train", augmentation=augmentation,
            seed=seed, task=task, mixing=mixing, num_classes=len(source.class_names),
            cache=None if cache_folder is None else FileCache(
                cache_folder, _cache_parts(source, split, source_split, image_size, channels,
                                           seed, max_examples, validation_fraction,
                                           test_fraction, held_out.labels)))
        for split, source_split in source_splits.items()
    }
    test_parts = source.test_parts
    if test_parts is not None and source.image_shape is not None:
        scale = np.array([image_size / source.image_shape[0], image_size / source.image_shape[1]])
        # Pixel centres sit at integer positions, so the scaling is about -0.5.
        test_parts = ((test_parts + 0.5) * scale - 0.5).astype(np.float32)
    info = DatasetInfo(
        name=source.name,
        num_classes=len(source.class_names),
        class_names=list(source.class_names),
        image_size=image_size,
        channels=channels,
        num_examples={split: source_split.num_examples
                      for split, source_split in source_splits.items()},
        split_origin=dict(source.split_origin),
        augmentation=augmentation,
        flip_invariant=bool(source.flip_invariant),
        mixing=mixing,
        cache=str(cache),
        skipped_files=list(source.skipped_files),
        warnings=warnings,
        holdout_classes=held_out.class_names,
    )
    return Splits(pipelines["train"], pipelines["validation"], pipelines["test"], info,
                  test_parts, pipelines.get("test_unseen"))


def _check_cache(cache):
    """None for "memory", else the cache folder, created and checked writable."""
    if cache == "memory":
        return None
    if not isinstance(cache, str) or not cache:
        raise ValueError(f"cache={cache!r} must be 'memory' or a folder path")
    folder = pathlib.Path(cache).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cache={cache!r}: cannot create the folder ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cache={cache!r}: the folder is not writable by this user")
    return folder


def _cache_parts(source, split, source_split, image_size, channels, seed, max_examples,
                 validation_fraction, test_fraction, held_out):
    """What a split's cached images depend on. The seed and the fractions count only where
    they choose the images: a generated set, carved splits or a seeded subset. `held_out`: the
    (K,) held-out class indices, named only when K > 0 so that other runs keep their files."""
    seeded = (source.name.startswith("builtin") or bool(source.carved_fractions)
              or max_examples is not None)
    labels = source_split.labels
    parts = {
        "dataset": source.name, "split": split, "image_size": image_size, "channels": channels,
        "num_examples": source_split.num_examples, "max_examples": max_examples,
        "labels": None if labels is None else hashlib.sha256(
            np.asarray(labels, np.int64).tobytes()).hexdigest()[:16],
        "seed": seed if seeded else None,
        "fractions": [validation_fraction, test_fraction] if source.carved_fractions else None,
        "format": 1,
    }
    if len(held_out):
        parts["holdout_labels"] = [int(label) for label in held_out]
    return parts
