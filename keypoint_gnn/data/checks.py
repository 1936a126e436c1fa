"""Whether an opened data set can train what it is loaded for, checked before any training.

`check_source` refuses, with a one-line ValueError that names the data set, the class or split,
and the counts:
  - any task: an empty split: a given split with no examples ("the test split is empty (t10k
    files: 0 examples)"), or a carved split that the fractions leave empty ("the validation
    split would be empty: validation_fraction=0.1 of the 4 examples rounds to 0 for every
    class ...");
  - task="classify": fewer than two classes with images ("folder:/x has 1 class ('cats',
    12 images); a classifier needs at least 2");
  - task="classify": a class with no training images: one whose images are too few for the
    carved splits to leave it one ("class 'dogs' has 2 images: too few for the train /
    validation / test split (fractions validation 0.3, test 0.3); add images or lower the
    fractions"), one present only in a given validation / test split, or one with no (decodable)
    images at all;
  - task="classify": a train split that `max_examples` leaves with a single class.

These use the splits' class counts before `max_examples`, so that they judge the data set, not
the seeded subset a quick run takes of it. What is usable but lopsided is logged as a warning
and returned (`DatasetInfo.warnings`): a split without images of some classes (small classes
that round to no validation or test images, or classes a `max_examples` subset left out), and,
for IDX files, label values with no images. Sources that cannot count classes without reading
every example (TFDS) get only the class-name and empty-split checks.
"""
from __future__ import annotations

import logging

import numpy as np

from keypoint_gnn.data.sources import SPLIT_NAMES, SourceData

_MAX_NAMED = 8

logger = logging.getLogger(__name__)


def _count(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _class_list(classes, class_names, counts=None) -> str:
    """"'cats', 'dogs'" or, with counts, "'cats' (12 images), 'dogs' (1 image)"."""
    classes = list(classes)
    parts = [repr(class_names[c])
             + ("" if counts is None else f" ({_count(int(counts[c]), 'image')})")
             for c in classes[:_MAX_NAMED]]
    more = f" and {len(classes) - _MAX_NAMED} more" if len(classes) > _MAX_NAMED else ""
    return ", ".join(parts) + more


def _one_class(c, class_names, counts=None) -> str:
    """"'cats', 12 images" (or "'cats'" without counts)."""
    return repr(class_names[c]) + ("" if counts is None else f", {_count(int(counts[c]), 'image')}")


def _class_counts(labels: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    if labels is None:
        return None
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]


def _fractions_text(carved: dict[str, float]) -> str:
    return ", ".join(f"{split} {fraction:g}" for split, fraction in carved.items())


def check_source(source: SourceData, *, task: str, max_examples: int | None) -> list[str]:
    """Raises ValueError for a data set that cannot train `task` (see the module docstring);
    returns the warnings, already logged."""
    name, class_names, splits = source.name, list(source.class_names), source.splits
    num_classes, origin = len(class_names), source.split_origin
    carved = dict(source.carved_fractions)
    uncapped = {split: splits[split].uncapped_labels for split in SPLIT_NAMES}
    sizes = {split: splits[split].num_examples if labels is None else len(labels)
             for split, labels in uncapped.items()}
    pool = sizes["train"] + sum(sizes[split] for split in carved)
    pool_where = f" in {origin.get('train', 'the training pool')}" if len(carved) < 2 else ""

    # A split with nothing to take its examples from.
    for split in SPLIT_NAMES:
        if sizes[split] == 0 and split not in carved and not (split == "train" and pool):
            raise ValueError(f"{name}: the {split} split is empty "
                             f"({origin.get(split, 'its source')}: 0 examples); add examples")

    warnings = []
    counts = None
    if all(labels is not None for labels in uncapped.values()):
        counts = {split: _class_counts(labels, num_classes) for split, labels in uncapped.items()}
    if task == "classify":
        warnings += _check_classes(source, counts, pool_where)

    # A carved split (or the train split they leave) with no examples.
    for split in SPLIT_NAMES:
        if sizes[split]:
            continue
        if split in carved:
            why = (f"{split}_fraction={carved[split]:g} of the {_count(pool, 'example')}"
                   f"{pool_where} rounds to 0 for every class (each class gives round(fraction x "
                   "its images)); raise the fraction or add examples")
        else:
            why = (f"the carved {' and '.join(carved)} split{'s' if len(carved) > 1 else ''} "
                   f"(fractions {_fractions_text(carved)}) take all {_count(pool, 'example')}"
                   f"{pool_where}; lower the fractions or add examples")
        raise ValueError(f"{name}: the {split} split would be empty: {why}")

    # What max_examples kept.
    cap = "" if max_examples is None else f", max_examples={max_examples}"
    for split in SPLIT_NAMES:
        if splits[split].num_examples == 0:
            raise ValueError(f"{name}: the {split} split is empty "
                             f"({origin.get(split, 'its source')}{cap}); add examples")
    if task == "classify":
        warnings += _check_kept_classes(source, counts, max_examples)
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def _check_classes(source: SourceData, counts, pool_where: str) -> list[str]:
    """The class rules on the whole splits (before max_examples); returns warnings."""
    name, class_names, origin = source.name, list(source.class_names), source.split_origin
    num_classes, carved = len(class_names), source.carved_fractions
    total = None if counts is None else sum(counts.values())
    if num_classes < 2:
        listed = f" ({_one_class(0, class_names, total)})" if num_classes else ""
        raise ValueError(f"{name} has {_count(num_classes, 'class', 'classes')}{listed}; "
                         "a classifier needs at least 2")
    if counts is None:
        return []
    with_images = np.flatnonzero(total)
    if len(with_images) < 2:
        listed = [_one_class(c, class_names, total) for c in with_images]
        listed.append(f"none of {_class_list(np.flatnonzero(total == 0), class_names)}")
        raise ValueError(f"{name} has images of only {len(with_images)} of its {num_classes} "
                         f"classes ({'; '.join(listed)}); a classifier needs at least 2")

    train = counts["train"]
    carved_pool = train + sum((counts[split] for split in carved), np.zeros_like(train))
    too_few = [c for c in range(num_classes) if train[c] == 0 and carved_pool[c] > 0]
    if too_few:
        parted = " / ".join(split for split in SPLIT_NAMES if split == "train" or split in carved)
        fractions = f"the {parted} split (fractions {_fractions_text(carved)})"
        if len(too_few) == 1:
            c = too_few[0]
            subject = (f"class {class_names[c]!r} has {_count(int(carved_pool[c]), 'image')}"
                       f"{pool_where}: too few for")
        else:
            subject = (f"classes {_class_list(too_few, class_names, carved_pool)}{pool_where} "
                       "have too few images for")
        raise ValueError(f"{name}: {subject} {fractions}; add images or lower the fractions")

    given = [split for split in ("validation", "test") if split not in carved]
    held_out_only = [c for c in range(num_classes) if train[c] == 0 and carved_pool[c] == 0
                     and any(counts[split][c] for split in given)]
    if held_out_only:
        def held_out(c):
            return ", ".join(f"{_count(int(counts[split][c]), 'image')} in {split} "
                             f"({origin.get(split, split)})"
                             for split in given if counts[split][c])

        train_where = f"none in train ({origin.get('train', 'train')})"
        if len(held_out_only) == 1:
            c = held_out_only[0]
            subject = f"class {class_names[c]!r} has {held_out(c)} but {train_where}"
        else:
            listed = "; ".join(f"{class_names[c]!r}: {held_out(c)}"
                               for c in held_out_only[:_MAX_NAMED])
            if len(held_out_only) > _MAX_NAMED:
                listed += f" and {len(held_out_only) - _MAX_NAMED} more"
            subject = (f"{len(held_out_only)} classes have held-out images ({listed}) but "
                       f"{train_where}")
        raise ValueError(f"{name}: {subject}; a classifier cannot learn a class it never trains "
                         "on: add its images to the training data")

    without_images = np.flatnonzero(total == 0)
    if len(without_images) == 0:
        return []
    listed = _class_list(without_images, class_names)
    if not source.unused_classes_allowed:
        decodable = " that could be decoded" if source.skipped_files else ""
        noun = "class" if len(without_images) == 1 else "classes"
        raise ValueError(f"{name}: {noun} {listed} ha{'s' if len(without_images) == 1 else 've'} "
                         f"no images{decodable}; a classifier cannot learn "
                         f"{'it' if len(without_images) == 1 else 'them'}: add images or remove "
                         f"the class folder{'s' if len(without_images) > 1 else ''}")
    return [(f"{name}: {_count(len(without_images), 'class', 'classes')} ({listed}) of the "
             f"{num_classes} have no images in any split; the classifier never predicts them")]


def _check_kept_classes(source: SourceData, counts, max_examples: int | None) -> list[str]:
    """The class rules on the splits as loaded (after max_examples); returns warnings."""
    name, class_names, splits = source.name, list(source.class_names), source.splits
    num_classes = len(class_names)
    kept = {split: _class_counts(splits[split].labels, num_classes) for split in SPLIT_NAMES}

    def cap_note(split, lead=" after "):
        uncapped = splits[split].uncapped_labels
        if max_examples is None or (uncapped is not None and len(uncapped) <= max_examples):
            return ""
        of = "" if uncapped is None else f" of its {len(uncapped)}"
        return f"{lead}max_examples={max_examples} kept {splits[split].num_examples}{of}"

    if kept["train"] is not None:
        in_train = np.flatnonzero(kept["train"])
        if len(in_train) < 2:
            listed = "; ".join(_one_class(c, class_names, kept["train"]) for c in in_train)
            raise ValueError(
                f"{name}: the train split holds images of only "
                f"{_count(len(in_train), 'class', 'classes')} ({listed}){cap_note('train')}; a "
                "classifier needs at least 2"
                + ("; raise max_examples" if cap_note("train") else ""))

    exist = (np.flatnonzero(sum(counts.values())) if counts is not None
             else np.arange(num_classes))
    consequence = {"train": "the classifier never learns {}",
                   "validation": "validation accuracy does not cover {}",
                   "test": "test accuracy does not cover {}"}
    warnings = []
    for split in SPLIT_NAMES:
        if kept[split] is None:
            continue
        missing = [c for c in exist if kept[split][c] == 0]
        if missing:
            classes = (f"class {class_names[missing[0]]!r}" if len(missing) == 1 else
                       f"{len(missing)} classes ({_class_list(missing, class_names)})")
            warnings.append(
                f"{name}: the {split} split has no images of {classes}: it comes from "
                f"{source.split_origin.get(split, split)}{cap_note(split, ', and ')}; "
                + consequence[split].format("it" if len(missing) == 1 else "them"))
    return warnings
