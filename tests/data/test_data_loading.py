"""`load_dataset` on the built-in set: pipeline contract, augmentation, argument errors."""
import numpy as np
import pytest
from builtin_helpers import OPTIONS
from builtin_helpers import concat as _concat
from builtin_helpers import load_builtin as _load

from keypoint_gnn.data import (
    Augmentation,
    BuiltinOptions,
    generate_splits,
    load_dataset,
)


def test_batches_shapes_dtypes_and_range():
    splits = _load(batch_size=32)
    assert splits.info.num_examples == {"train": 160, "validation": 20, "test": 20}
    assert splits.info.num_classes == 6 and splits.info.channels == 3
    for dataset, count in ((splits.train, 160), (splits.validation, 20), (splits.test, 20)):
        images, labels = _concat(dataset)
        assert images.shape == (count, 48, 48, 3) and images.dtype == np.float32
        assert labels.shape == (count,) and labels.dtype == np.int32
        assert images.min() >= 0 and images.max() <= 1


def test_test_split_keeps_order_and_matches_parts():
    splits = _load(image_size=40, seed=4)
    reference = generate_splits(40, 4, splits.info.num_examples, OPTIONS)["test"]
    images, labels = _concat(splits.test)
    np.testing.assert_allclose(images, reference.images / 255, atol=1e-6)
    np.testing.assert_array_equal(labels, reference.labels)
    np.testing.assert_array_equal(splits.test_parts, reference.part_positions)
    # The 3x3 marker (below 44 px) is a white ring around a black centre.
    for image, parts in zip(images, splits.test_parts.astype(int)):
        for y, x in parts:
            assert image[y, x].max() == 0 and image[y - 1, x - 1].min() == 1


def test_without_augmentation_train_is_a_shuffle_of_the_generated_images():
    splits = _load(augment=False, seed=2)
    reference = generate_splits(48, 2, splits.info.num_examples, OPTIONS)["train"]
    images, labels = _concat(splits.train)
    assert not np.array_equal(labels, reference.labels)  # shuffled
    order = np.lexsort(images.reshape(len(images), -1).T[:50])
    reference_order = np.lexsort((reference.images / 255).reshape(len(images), -1).T[:50])
    np.testing.assert_allclose(images[order], reference.images[reference_order] / 255,
                               atol=1e-6)


def test_augmented_train_is_repeatable_per_seed_and_changes_each_epoch():
    first = _load(seed=7, batch_size=16)
    second = _load(seed=7, batch_size=16)
    epoch_one = next(iter(first.train))[0].numpy()
    np.testing.assert_array_equal(epoch_one, next(iter(second.train))[0].numpy())
    assert not np.array_equal(epoch_one, next(iter(first.train))[0].numpy())


def test_builtin_default_augmentation_crops_without_flipping():
    info = _load().info
    assert info.augmentation == Augmentation(flip=False, crop_padding=4)
    assert _load(augment="flip,crop").info.augmentation == Augmentation(True, 4)
    assert _load(augment=False).info.augmentation == Augmentation(False, 0)
    assert _load(augment="none").info.augmentation == Augmentation(False, 0)


def test_crop_only_shifts_the_image():
    splits = _load(augment=Augmentation(flip=False, crop_padding=3), batch_size=200)
    images, _ = _concat(splits.train)
    plain, _ = _concat(_load(augment=False, batch_size=200).train)
    # Same multiset of images up to a shift of at most 3 pixels: compare the central crop.
    centre = {np.round(image[8:40, 8:40], 4).tobytes() for image in plain}
    assert images.shape == plain.shape
    found = 0
    for image in images[:20]:
        found += any(np.round(image[8 + dy:40 + dy, 8 + dx:40 + dx], 4).tobytes() in centre
                     for dy in range(-3, 4) for dx in range(-3, 4))
    assert found == 20


def test_reconstruct_yields_image_pairs_and_grey_conversion():
    splits = _load(task="reconstruct", channels=1, image_size=32)
    inputs, targets = next(iter(splits.validation))
    assert inputs.shape[1:] == (32, 32, 1)
    np.testing.assert_array_equal(inputs, targets)


@pytest.mark.parametrize("kwargs,message", [
    ({"image_size": 0}, "image_size=0"),
    ({"image_size": -5}, "image_size=-5"),
    ({"image_size": 2.5}, "image_size=2.5"),
    ({"image_size": 24}, "image_size=24"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"channels": 2}, "channels=2"),
    ({"channels": 4}, "channels=4"),
    ({"task": "segment"}, "task='segment'"),
    ({"validation_fraction": 0}, "validation_fraction=0"),
    ({"test_fraction": 1.5}, "test_fraction=1.5"),
    ({"validation_fraction": 0.6, "test_fraction": 0.5}, "must be below 1"),
    ({"max_examples": 0}, "max_examples=0"),
    ({"seed": -1}, "seed=-1"),
    ({"augment": "rotate"}, "augment='rotate'"),
    ({"builtin_options": "many"}, "builtin_options='many'"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _load(**kwargs)


@pytest.mark.parametrize("spec", ["foo:bar", "", "Not A Name", "folder:", "idx:", 42])
def test_unknown_spec_names_the_value_and_the_valid_forms(spec):
    with pytest.raises(ValueError, match="builtin.*folder:PATH.*idx:PATH") as error:
        load_dataset(spec)
    assert repr(spec) in str(error.value)


def test_builtin_options_only_for_builtin(tmp_path):
    with pytest.raises(ValueError, match="builtin_options"):
        load_dataset(f"folder:{tmp_path}", builtin_options=OPTIONS)


def test_builtin_spec_sets_the_options_like_builtin_options():
    spec = "builtin:max_rotation_degrees=45,num_examples=60"
    from_spec = load_dataset(spec, image_size=32, batch_size=8)
    from_options = load_dataset("builtin", image_size=32, batch_size=8,
                                builtin_options=BuiltinOptions(max_rotation_degrees=45,
                                                               num_examples=60))
    assert from_spec.info.name == spec  # metrics.json records the whole spec
    assert from_options.info.name == "builtin"
    assert from_spec.info.num_examples == {"train": 48, "validation": 6, "test": 6}
    for split in ("train", "validation", "test"):
        spec_images, spec_labels = _concat(getattr(from_spec, split))
        images, labels = _concat(getattr(from_options, split))
        np.testing.assert_array_equal(spec_images, images)
        np.testing.assert_array_equal(spec_labels, labels)
    np.testing.assert_array_equal(from_spec.test_parts, from_options.test_parts)


@pytest.mark.parametrize("spec,message", [
    ("builtin:rotation=45", "builtin option 'rotation' is not one of num_examples, num_classes"),
    ("builtin:num_classes=4.5", "builtin option num_classes='4.5' must be an integer"),
    ("builtin:max_rotation_degrees=200", r"max_rotation_degrees=200.0 must be in \[0, 180\]"),
    ("builtin:num_classes", "builtin option 'num_classes' must be KEY=VALUE"),
    ("builtin:", "builtin options are empty"),
])
def test_bad_builtin_spec_names_the_key_or_value(spec, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(spec, image_size=32)


def test_builtin_spec_and_builtin_options_together_are_refused():
    with pytest.raises(ValueError, match=r"dataset='builtin:num_classes=3' and builtin_options"):
        load_dataset("builtin:num_classes=3", builtin_options=OPTIONS)
