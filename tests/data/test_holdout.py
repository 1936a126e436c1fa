"""Held-out classes (`load_dataset(holdout_classes=K)`, `keypoint_gnn.data.holdout`): whole
classes kept out of train / validation / test, all their images in `test_unseen`."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from keypoint_gnn._backend import tf
from keypoint_gnn.data import load_dataset
from keypoint_gnn.data.holdout import hold_out_classes
from keypoint_gnn.data.sources import SourceData, SourceSplit
from keypoint_gnn.run_config import DataConfig

PEOPLE, IMAGES_EACH, SIZE = 6, 6, 6
EVERY_IMAGE = {(person, image) for person in range(PEOPLE) for image in range(IMAGES_EACH)}


def _people(root):
    """PEOPLE class folders ("person0", ...) of IMAGES_EACH solid PNGs, SIZE x SIZE (no resize
    at image_size=SIZE); red = 40 x person and green = 40 x image spell out which image it is."""
    for person in range(PEOPLE):
        os.makedirs(root / f"person{person}")
        for image in range(IMAGES_EACH):
            pixels = np.full((SIZE, SIZE, 3), 255, np.uint8)
            pixels[..., 0], pixels[..., 1] = 40 * person, 40 * image
            Image.fromarray(pixels).save(root / f"person{person}" / f"{image}.png")
    return root


def _load(root, **kwargs):
    # Fractions 0.2 carve 1 validation and 1 test image per person, leaving 4 for training.
    return load_dataset(f"folder:{root}", image_size=SIZE, batch_size=5, task="reconstruct",
                        augment=False, validation_fraction=0.2, test_fraction=0.2, **kwargs)


def _identities(dataset):
    """[(person, image)] of the (images, images) batches of `dataset`, in order."""
    found = []
    for images, targets in dataset:
        np.testing.assert_array_equal(images.numpy(), targets.numpy())
        codes = np.round(images.numpy()[:, 0, 0, :2] * 255 / 40).astype(int)
        found += [(int(person), int(image)) for person, image in codes]
    return found


def _people_in(identities):
    return {person for person, _ in identities}


def test_held_out_people_are_all_in_test_unseen_and_nowhere_else(tmp_path):
    root = _people(tmp_path / "faces")
    splits = _load(root, holdout_classes=2, seed=3)
    info = splits.info
    assert len(info.holdout_classes) == 2
    held_out = {int(name.removeprefix("person")) for name in info.holdout_classes}
    assert info.num_examples == {"train": 16, "validation": 4, "test": 4, "test_unseen": 12}
    assert info.num_classes == PEOPLE  # the class list itself is unchanged

    found = {split: _identities(getattr(splits, split))
             for split in ("train", "validation", "test", "test_unseen")}
    assert sorted(found["test_unseen"]) == sorted(
        (person, image) for person in held_out for image in range(IMAGES_EACH))
    for split in ("train", "validation", "test"):
        assert len(found[split]) == info.num_examples[split]
        assert not _people_in(found[split]) & held_out, split
        assert _people_in(found[split]) == set(range(PEOPLE)) - held_out, split
    # Disjoint, and together every image once.
    everything = [identity for identities in found.values() for identity in identities]
    assert sorted(everything) == sorted(EVERY_IMAGE)

    # The pixels are the files' own, and test_unseen keeps one fixed order.
    images = np.concatenate([x.numpy() for x, _ in splits.test_unseen])
    for (person, image), pixels in zip(found["test_unseen"], images):
        expected = np.asarray(Image.open(root / f"person{person}" / f"{image}.png"), np.float32)
        np.testing.assert_allclose(pixels, expected / 255, atol=1e-6)
    assert _identities(splits.test_unseen) == found["test_unseen"]

    # Without held-out classes the same seed carves the same splits: holding out only removes
    # those people, and test_unseen gathers them from train, then validation, then test.
    plain = _load(root, seed=3)
    assert plain.test_unseen is None and plain.info.holdout_classes == []
    assert plain.info.num_examples == {"train": 24, "validation": 6, "test": 6}
    plain_found = {split: _identities(getattr(plain, split))
                   for split in ("train", "validation", "test")}
    kept = {split: [i for i in identities if i[0] not in held_out]
            for split, identities in plain_found.items()}
    gathered = {split: [i for i in identities if i[0] in held_out]
                for split, identities in plain_found.items()}
    assert sorted(found["train"]) == sorted(kept["train"])  # train is shuffled
    assert found["validation"] == kept["validation"] and found["test"] == kept["test"]
    from_train = len(gathered["train"])
    assert sorted(found["test_unseen"][:from_train]) == sorted(gathered["train"])
    assert found["test_unseen"][from_train:] == gathered["validation"] + gathered["test"]


def test_the_held_out_people_are_drawn_with_the_seed(tmp_path):
    root = _people(tmp_path / "faces")

    def held_out(seed):
        return _load(root, holdout_classes=2, seed=seed).info.holdout_classes

    first = held_out(0)
    assert held_out(0) == first
    assert any(held_out(seed) != first for seed in range(1, 6))


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_a_bad_holdout_count_is_refused(tmp_path, value):
    message = f"holdout_classes={value!r} must be an integer >= 0"
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(".", r"\.")):
        _load(tmp_path, holdout_classes=value)
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        DataConfig(holdout_classes=value)
    assert DataConfig(holdout_classes=2).holdout_classes == 2


def test_holding_out_for_a_classifier_is_refused(tmp_path):
    with pytest.raises(ValueError) as error:
        load_dataset(f"folder:{tmp_path}", task="classify", holdout_classes=1)
    assert str(error.value) == ("holdout_classes=1 needs task='reconstruct', not "
                                "task='classify': a classifier cannot be tested on classes it "
                                "never saw")


def test_holding_out_all_but_one_person_is_refused(tmp_path):
    root = _people(tmp_path / "faces")
    _load(root, holdout_classes=4)  # 2 people keep their training images
    with pytest.raises(ValueError) as error:
        _load(root, holdout_classes=5)
    assert str(error.value) == (f"folder:{root}: holdout_classes=5 would leave 1 of the 6 "
                                "classes with training images; at least 2 must stay, so hold "
                                "out at most 4")
    with pytest.raises(ValueError, match="holdout_classes=9 would leave 0 of the 6 classes"):
        _load(root, holdout_classes=9)


def _tiny_source(labels_known=True, validation_labels=(0, 1, 2)):
    def split(labels):
        labels = np.asarray(labels, np.int64)
        images = np.zeros((len(labels), 2, 2, 1), np.uint8)
        made = SourceSplit.from_arrays(images, labels)
        return made if labels_known else SourceSplit(made.examples, len(labels))

    return SourceData(name="tiny", class_names=["a", "b", "c"], channels=1,
                      splits={"train": split([0, 1, 2] * 2), "validation": split(validation_labels),
                              "test": split([0, 1, 2])},
                      split_origin={"train": "train", "validation": "validation", "test": "test"})


def test_a_source_that_cannot_tell_its_labels_is_refused():
    with pytest.raises(ValueError) as error:
        hold_out_classes(_tiny_source(labels_known=False), 1, seed=0)
    assert str(error.value).startswith("tiny: holdout_classes=1 needs the class of every "
                                       "example, which this source cannot tell")
    assert hold_out_classes(_tiny_source(labels_known=False), 0, seed=0).unseen is None


def test_a_validation_split_of_held_out_people_only_is_refused():
    source = _tiny_source(validation_labels=[1, 1])
    seed = next(seed for seed in range(50)
                if hold_out_classes(_tiny_source(), 1, seed).class_names == ["b"])
    with pytest.raises(ValueError) as error:
        hold_out_classes(source, 1, seed)
    assert str(error.value) == ("tiny: holdout_classes=1 leaves the validation split empty: all "
                                "its 2 examples are of the held-out classes ('b'); hold out "
                                "fewer classes, another seed, or add examples")


def test_the_file_cache_keeps_held_out_runs_apart(tmp_path):
    root, cache = _people(tmp_path / "faces"), tmp_path / "cache"

    def counts(splits):
        return {split: len(_identities(getattr(splits, split)))
                for split in ("train", "validation", "test", "test_unseen")
                if getattr(splits, split) is not None}

    held_out = _load(root, holdout_classes=1, cache=str(cache))
    assert counts(held_out) == {"train": 20, "validation": 5, "test": 5, "test_unseen": 6}
    assert len(list(cache.glob("*.index"))) == 4
    unseen_key = [json.loads(path.read_text()) for path in cache.glob("*.json")
                  if json.loads(path.read_text())["split"] == "test_unseen"]
    person = int(held_out.info.holdout_classes[0].removeprefix("person"))
    assert unseen_key[0]["holdout_labels"] == [person]

    plain = _load(root, cache=str(cache))
    assert counts(plain) == {"train": 24, "validation": 6, "test": 6}
    assert len(list(cache.glob("*.index"))) == 7

    again = _load(root, holdout_classes=1, cache=str(cache))
    assert len(list(cache.glob("*.index"))) == 7  # read back, not written again
    assert _identities(again.test_unseen) == _identities(held_out.test_unseen)
    assert _people_in(_identities(again.train)) == set(range(PEOPLE)) - {person}


def test_builtin_test_parts_follow_the_test_images():
    common = {"image_size": 32, "batch_size": 50, "max_examples": 60, "seed": 1}
    plain = load_dataset("builtin", augment=False, **common)
    labels = np.concatenate([y.numpy() for _, y in plain.test])
    splits = load_dataset("builtin", task="reconstruct", holdout_classes=1, **common)
    person = plain.info.class_names.index(splits.info.holdout_classes[0])
    np.testing.assert_array_equal(splits.test_parts, plain.test_parts[labels != person])
    assert sum(int(x.shape[0]) for x, _ in splits.test) == len(splits.test_parts)
    assert tf.data.experimental.cardinality(splits.test_unseen).numpy() > 0
