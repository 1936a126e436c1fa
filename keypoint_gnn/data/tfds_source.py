"""TensorFlow Datasets sources, read only from an already prepared `data_dir`.

keypoint_gnn never downloads: the machines it runs on may have no network, and a download
attempt there hangs or fails late. A name whose data is not prepared in `data_dir` raises at
once, with the ways to provide the data.

Splits: TFDS `train`; `validation` if the data set has one; `test` if it has one. Without
`test`, the `validation` split becomes the test split (it is the published held-out set, as in
Imagenette) and validation is carved from the end of `train`; without either, both are carved
from `train`. TFDS shuffled the examples when it prepared them, so the carved slices are random
samples, the same for every seed.
"""
from __future__ import annotations

import os

from keypoint_gnn._backend import tf
from keypoint_gnn.data.sources import SourceData, SourceSplit

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")
# Mirror images of digits and characters are other symbols (or none).
_NOT_FLIP_INVARIANT = ("mnist", "emnist", "kmnist", "binarized_mnist", "svhn_cropped",
                       "omniglot", "cmaterdb")
_FIND_NAMES = ("the catalogue at https://www.tensorflow.org/datasets/catalog/overview, or "
               "`python -c \"import tensorflow_datasets as tfds; print(tfds.list_builders())\"`")


def not_prepared_message(name: str, data_dir: str) -> str:
    """What to do when `name` has no prepared data in `data_dir`."""
    return (
        f"TFDS data set {name!r} is not prepared in data_dir {data_dir!r}, and keypoint_gnn "
        "does not download it (this machine may be offline, and a download attempt could "
        "hang). Provide the data: on a machine with network run "
        f"`tfds build {name.split(':')[0]} --data_dir DIR` (or "
        f"`tfds.load({name!r}, data_dir='DIR')`), copy DIR here and pass data_dir=DIR; or "
        "give the images as 'folder:PATH' (one sub-folder per class) or 'idx:PATH' "
        "(MNIST-format IDX files).")


def open_prepared_builder(name: str, data_dir: str | None):
    """The TFDS builder of `name`, after checking that its data is already prepared.

    Raises:
      ValueError: `name` is not a TFDS data set or config; the message says how to list them.
      FileNotFoundError: the data is not prepared in `data_dir` (no download is tried).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise ValueError(
            f"dataset={name!r} is neither 'builtin', 'folder:PATH', 'idx:PATH' nor a known "
            f"TensorFlow Datasets name; for TFDS names see {_FIND_NAMES}") from error
    except (ValueError, AssertionError) as error:
        raise ValueError(f"dataset={name!r}: TFDS cannot make this builder ({error}); for "
                         f"names and configs see {_FIND_NAMES}") from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            not_prepared_message(name, os.path.expanduser(data_dir or DEFAULT_DATA_DIR)))
    return builder


def _supervised_features(builder, name: str):
    """(image feature, label feature) of a supervised image-classification builder."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2:
        raise ValueError(f"TFDS data set {name!r} has supervised_keys={keys}; keypoint_gnn "
                         "needs (image, label) pairs")
    image, label = builder.info.features[keys[0]], builder.info.features[keys[1]]
    if not (isinstance(image, tfds.features.Image)
            and isinstance(label, tfds.features.ClassLabel)):
        raise ValueError(  # noqa: TRY004  (a property of the data set, not of an argument)
            f"TFDS data set {name!r} maps {keys[0]!r} to {keys[1]!r}, not an image to a class "
            "label")
    return image, label


def _split_instructions(available: dict[str, int], validation_fraction: float,
                        test_fraction: float, max_examples: int | None, name: str = "TFDS"):
    """({split: TFDS slice string}, {split: count}, {split: origin in words}, {carved split:
    fraction}); ValueError naming the split and why when one would be empty."""
    train_count = available["train"]
    held_out = {}
    origin = {}
    if "test" in available:
        held_out["test"] = ("test", 0, available["test"])
        if "validation" in available:
            held_out["validation"] = ("validation", 0, available["validation"])
    elif "validation" in available:
        held_out["test"] = ("validation", 0, available["validation"])
    carved_end = train_count
    carved = {}
    for split, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if split not in held_out:
            count = round(fraction * train_count)
            held_out[split] = ("train", carved_end - count, carved_end)
            carved_end -= count
            carved[split] = fraction
    ranges = {"train": ("train", 0, carved_end), **held_out}
    instructions, counts = {}, {}
    for split, (source, start, end) in ranges.items():
        if max_examples is not None:
            end = min(end, start + max_examples)
        if end <= start:
            if split in carved:
                why = (f"{split}_fraction={carved[split]} of TFDS train's {train_count} examples "
                       "rounds to 0; raise the fraction or add examples")
            elif source == "train" and carved and train_count:
                why = (f"the carved {' and '.join(carved)} split{'s' if len(carved) > 1 else ''} "
                       f"take all of TFDS train's {train_count} examples; lower the fractions")
            else:
                why = f"TFDS {source} has {available[source]} examples"
            raise ValueError(f"{name}: the {split} split would be empty: {why}")
        instructions[split] = f"{source}[{start}:{end}]"
        counts[split] = end - start
        origin[split] = f"TFDS {source}[{start}:{end}]"
    carved = {split: carved[split] for split in ("validation", "test") if split in carved}
    return instructions, counts, origin, carved


def load_tfds_source(name: str, *, data_dir: str | None, seed: int, validation_fraction: float,
                     test_fraction: float, max_examples: int | None) -> SourceData:
    """Reads a prepared TFDS image-classification data set; `seed` is unused (see module)."""
    del seed
    builder = open_prepared_builder(name, data_dir)
    image_feature, label_feature = _supervised_features(builder, name)
    available = {split: info.num_examples for split, info in builder.info.splits.items()}
    if "train" not in available:
        raise ValueError(f"TFDS data set {name!r} has splits {sorted(available)}; keypoint_gnn "
                         "needs a 'train' split")
    instructions, counts, origin, carved = _split_instructions(
        available, validation_fraction, test_fraction, max_examples, name)
    channels = image_feature.shape[-1] or 3
    splits = {}
    for split, instruction in instructions.items():
        examples = builder.as_dataset(split=instruction, as_supervised=True, shuffle_files=False)
        examples = examples.map(lambda image, label: (image, tf.cast(label, tf.int32)))
        splits[split] = SourceSplit(examples, counts[split])
    height, width = image_feature.shape[:2]
    return SourceData(
        name=name,
        class_names=list(label_feature.names),
        channels=int(channels),
        splits=splits,
        split_origin=origin,
        flip_invariant=name.split("/")[0].split(":")[0] not in _NOT_FLIP_INVARIANT,
        image_shape=(height, width) if height and width else None,
        carved_fractions=carved,
    )
