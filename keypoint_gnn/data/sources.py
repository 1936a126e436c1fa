"""What a data source hands to the pipeline, and which `--dataset` spec names which source.

Specs:
  - `builtin`: the generated constellation set (`keypoint_gnn.data.builtin`);
    `builtin:KEY=VALUE,...` sets its `BuiltinOptions`, e.g.
    `builtin:max_rotation_degrees=45,num_classes=10,scale_range=0.4-0.8`.
  - `folder:PATH`: one sub-folder of images per class (`keypoint_gnn.data.folder`).
  - `idx:PATH`: a folder of MNIST-format IDX files (`keypoint_gnn.data.idx`).
  - a TensorFlow Datasets name such as `cifar10`, `imagenette/160px` or `mnist:3.0.1`, read
    from an already prepared `data_dir` and never downloaded (`keypoint_gnn.data.tfds_source`);
    `tfds:NAME` says the same explicitly.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from keypoint_gnn._backend import tf

SPLIT_NAMES = ("train", "validation", "test")
VALID_FORMS = ("'builtin' (or 'builtin:KEY=VALUE,...'), 'folder:PATH', 'idx:PATH', or a "
               "TensorFlow Datasets name such as 'cifar10' or 'imagenette/160px' "
               "(optionally 'tfds:NAME')")
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[\w.\-]+)?(:\d+(\.\d+){0,2})?$")


@dataclasses.dataclass
class SourceSplit:
    """One split before the pipeline.

    Attributes:
      examples: dataset of (image uint8 (H, W, C), label int32 ()); H and W may vary.
      num_examples: number of elements of `examples`.
      labels: (num_examples,) class of each element of `examples`, or None where the source
        cannot tell without reading the data (TFDS).
      uncapped_labels: the classes of the whole split before `max_examples` took a subset of it,
        or None where unknown (TFDS; the built-in set, which is generated at the capped size).
    """

    examples: tf.data.Dataset
    num_examples: int
    labels: np.ndarray | None = None
    uncapped_labels: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray,
                    uncapped_labels: np.ndarray | None = None) -> SourceSplit:
        """From images (N, H, W, C) uint8 and labels (N,) held in memory; `uncapped_labels` are
        the split's labels before `max_examples`, where known."""
        examples = tf.data.Dataset.from_tensor_slices(
            (images.astype(np.uint8), labels.astype(np.int32)))
        return cls(examples, len(labels), np.asarray(labels, np.int64),
                   None if uncapped_labels is None else np.asarray(uncapped_labels, np.int64))


@dataclasses.dataclass
class SourceData:
    """A data source's splits and description, in the source's own image size.

    Attributes:
      name: the spec it was opened from.
      class_names: one name per class index.
      channels: channels C of the source's images, 1 or 3.
      splits: {"train" | "validation" | "test": `SourceSplit`}.
      split_origin: {split name: where its examples come from}, in words.
      flip_invariant: whether a horizontal flip keeps an image's class, so that flip
        augmentation is safe by default.
      skipped_files: files left out because they could not be decoded.
      test_parts: builtin only: (n_test, P, 2) (y, x) part centres in source image pixels.
      image_shape: (H, W) shared by every image, or None when sizes vary.
      carved_fractions: {split: fraction} of the splits carved from the training pool (each
        class gives round(fraction * its images) to the split, and train keeps the rest);
        empty when the source brings every split.
      unused_classes_allowed: whether a class may have no images at all (IDX: the classes are
        0 .. the largest label, so an unused label value, such as EMNIST letters' 0, is a class
        without images); `keypoint_gnn.data.checks` warns about those instead of refusing.
    """

    name: str
    class_names: list[str]
    channels: int
    splits: dict[str, SourceSplit]
    split_origin: dict[str, str]
    flip_invariant: bool = True
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    test_parts: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    carved_fractions: dict[str, float] = dataclasses.field(default_factory=dict)
    unused_classes_allowed: bool = False


def open_source(spec: str, *, image_size: int, seed: int, data_dir: str | None,
                validation_fraction: float, test_fraction: float, max_examples: int | None,
                builtin_options=None) -> SourceData:
    """Opens the source that `spec` names; see the module docstring for the forms.

    `validation_fraction` and `test_fraction` divide sources that do not bring those splits;
    `max_examples` caps every split (a seeded subset). `builtin_options` applies to a plain
    `builtin` spec; a `builtin:KEY=VALUE,...` spec brings its own (`builtin.parse_options`),
    and giving both is an error. Raises ValueError naming `spec` when it has none of the valid
    forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset={spec!r} is not a data set spec; use {VALID_FORMS}")
    common = {"seed": seed, "validation_fraction": validation_fraction,
              "test_fraction": test_fraction, "max_examples": max_examples}
    prefix, _, rest = spec.partition(":")
    if prefix == "builtin":
        from keypoint_gnn.data import builtin, builtin_source
        options = builtin_options
        if spec != "builtin":
            if builtin_options is not None:
                raise ValueError(f"dataset={spec!r} and builtin_options both set the built-in "
                                 f"set's options; pass only one of them")
            options = builtin.parse_options(rest)
        return builtin_source.load_builtin_source(spec, image_size=image_size, options=options,
                                                  **common)
    if builtin_options is not None:
        raise ValueError(f"builtin_options apply to dataset='builtin' only, not dataset={spec!r}")
    if prefix == "folder" and rest:
        from keypoint_gnn.data import folder
        return folder.load_folder_source(rest, **common)
    if prefix == "idx" and rest:
        from keypoint_gnn.data import idx
        return idx.load_idx_source(rest, **common)
    tfds_name = rest if prefix == "tfds" else spec
    if _TFDS_NAME.match(tfds_name):
        from keypoint_gnn.data import tfds_source
        return tfds_source.load_tfds_source(tfds_name, data_dir=data_dir, **common)
    raise ValueError(f"dataset={spec!r} is not a data set spec; use {VALID_FORMS}")
