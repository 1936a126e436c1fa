"""Held-out classes: whole classes kept out of training, to test a model on classes it never saw.

    check_holdout_classes(2, task="reconstruct")            # before the source is opened
    held_out = hold_out_classes(source, holdout_classes=2, seed=0)
    held_out.source    # SourceData: train / validation / test without the held-out classes
    held_out.unseen    # SourceSplit: every image of those classes, from every split, in order
    held_out.labels    # (2,) int64 class indices, sorted

An autoencoder trained on the rest is then measured on unseen images of the classes it saw
(`test`) and on classes it never saw (`unseen`, `load_dataset`'s `test_unseen` split): in a face
set, people it never saw. A classifier cannot be tested on classes it never learnt, so the split
is for task="reconstruct" only.
"""
from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.data.sources import SPLIT_NAMES, SourceData, SourceSplit

# Classes that must keep training images: one would let a model learn a single class's look.
MIN_TRAINED_CLASSES = 2


@dataclasses.dataclass
class HeldOut:
    """A source with some classes held out.

    Attributes:
      source: the source with those classes removed from train, validation and test (and
        their rows from `test_parts`).
      unseen: every example of the held-out classes, those of train, then validation, then
        test, each in its split's order; None when no class is held out.
      labels: (K,) int64 sorted indices of the held-out classes, K >= 0.
    """

    source: SourceData
    unseen: SourceSplit | None
    labels: np.ndarray

    @property
    def class_names(self) -> list[str]:
        """The held-out classes' names, in label order."""
        return [self.source.class_names[c] for c in self.labels]


def check_holdout_classes(holdout_classes, task: str) -> None:
    """Raises ValueError unless `holdout_classes` is an int >= 0, and 0 for task="classify"."""
    if (isinstance(holdout_classes, bool) or not isinstance(holdout_classes, numbers.Integral)
            or holdout_classes < 0):
        raise ValueError(f"holdout_classes={holdout_classes!r} must be an integer >= 0")
    if holdout_classes and task != "reconstruct":
        raise ValueError(f"holdout_classes={holdout_classes} needs task='reconstruct', not "
                         f"task={task!r}: a classifier cannot be tested on classes it never saw")


def choose_held_out(train_labels: np.ndarray, holdout_classes: int, seed: int) -> np.ndarray:
    """`holdout_classes` of the classes in `train_labels` (N,), drawn with `seed`; (K,) sorted
    int64. Equal seeds draw equal classes."""
    candidates = np.unique(np.asarray(train_labels, np.int64))
    chosen = np.random.default_rng(seed).choice(candidates, size=holdout_classes, replace=False)
    return np.sort(chosen).astype(np.int64)


def _select(split: SourceSplit, is_held_out: np.ndarray, held_out: bool) -> SourceSplit:
    """The examples of `split` whose class is (`held_out`=True) or is not held out.

    `is_held_out`: (num_classes,) bool, indexed by label.
    """
    keep = is_held_out[split.labels] == held_out
    lookup = tf.constant(is_held_out)
    examples = split.examples.filter(
        lambda image, label: tf.equal(tf.gather(lookup, label), held_out))
    count = int(keep.sum())
    uncapped = split.uncapped_labels
    if uncapped is not None:
        uncapped = uncapped[is_held_out[uncapped] == held_out]
    # The filter hides the count that Keras's progress and epoch length read.
    examples = examples.apply(tf.data.experimental.assert_cardinality(count))
    return SourceSplit(examples, count, split.labels[keep], uncapped)


def hold_out_classes(source: SourceData, holdout_classes: int, seed: int) -> HeldOut:
    """Removes `holdout_classes` classes, drawn with `seed` among those with training images,
    from every split of `source`, and gathers all their examples into one split.

    Args:
      source: an opened source whose splits know their labels.
      holdout_classes: K >= 0 classes to hold out; 0 returns `source` unchanged.
      seed: seed of the draw.

    Returns:
      `HeldOut`.

    Raises:
      ValueError: a source whose splits do not know their labels (TFDS); K that leaves fewer
        than `MIN_TRAINED_CLASSES` classes with training images; a validation or test split
        made only of held-out classes. The message names K and the counts.
    """
    if not holdout_classes:
        return HeldOut(source, None, np.zeros(0, np.int64))
    name, splits = source.name, source.splits
    if any(splits[split].labels is None for split in SPLIT_NAMES):
        raise ValueError(f"{name}: holdout_classes={holdout_classes} needs the class of every "
                         "example, which this source cannot tell without reading its data "
                         "(TFDS); use holdout_classes=0, or a folder:, idx: or builtin data set")
    trained = len(np.unique(splits["train"].labels))
    if trained - holdout_classes < MIN_TRAINED_CLASSES:
        raise ValueError(
            f"{name}: holdout_classes={holdout_classes} would leave "
            f"{max(trained - holdout_classes, 0)} of the {trained} classes with training images; "
            f"at least {MIN_TRAINED_CLASSES} must stay, so hold out at most "
            f"{max(trained - MIN_TRAINED_CLASSES, 0)}")

    labels = choose_held_out(splits["train"].labels, holdout_classes, seed)
    is_held_out = np.zeros(len(source.class_names), bool)
    is_held_out[labels] = True
    names = ", ".join(repr(source.class_names[c]) for c in labels)
    kept = {split: _select(splits[split], is_held_out, held_out=False) for split in SPLIT_NAMES}
    for split in ("validation", "test"):
        if kept[split].num_examples == 0:
            raise ValueError(
                f"{name}: holdout_classes={holdout_classes} leaves the {split} split empty: all "
                f"its {splits[split].num_examples} examples are of the held-out classes "
                f"({names}); hold out fewer classes, another seed, or add examples")

    parts = [_select(splits[split], is_held_out, held_out=True) for split in SPLIT_NAMES]
    examples = parts[0].examples
    for part in parts[1:]:
        examples = examples.concatenate(part.examples)
    unseen = SourceSplit(examples, sum(part.num_examples for part in parts),
                         np.concatenate([part.labels for part in parts]))

    test_parts = source.test_parts
    if test_parts is not None:
        test_parts = test_parts[~is_held_out[splits["test"].labels]]
    origin = {split: f"{where}, without the held-out classes"
              for split, where in source.split_origin.items()}
    origin["test_unseen"] = (f"the {holdout_classes} held-out "
                             f"{'class' if holdout_classes == 1 else 'classes'} ({names}; drawn "
                             f"with seed {seed}): all their images from train, validation and test")
    return HeldOut(dataclasses.replace(source, splits=kept, test_parts=test_parts,
                                       split_origin=origin), unseen, labels)
