"""Image-folder sources: layouts, greyscale and colour, corrupt files, errors."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from keypoint_gnn.data import load_dataset
from keypoint_gnn.data.folder import load_folder_source

COLOURS = {"apple": (200, 30, 30), "leaf": (20, 180, 40), "sky": (30, 60, 220)}


def _write(path, array, image_format=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=image_format)


def _solid(colour, height=12, width=10):
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def _make_class_folders(root, per_class=10, grey_only=False):
    """Each class: solid images of its colour as PNG and JPEG, one greyscale PGM."""
    for name, colour in COLOURS.items():
        for index in range(per_class):
            if grey_only:
                _write(f"{root}/{name}/{index}.pgm", np.full((12, 9), colour[0], np.uint8))
            elif index == 0:
                _write(f"{root}/{name}/{index}.pgm", np.full((14, 8), colour[0], np.uint8))
            elif index % 2:
                _write(f"{root}/{name}/{index}.png", _solid(colour))
            else:
                _write(f"{root}/{name}/{index}.jpg", _solid(colour, 16, 16))


def _all_examples(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_colour_and_greyscale_files_with_a_corrupt_one(tmp_path, caplog):
    _make_class_folders(tmp_path)
    (tmp_path / "leaf" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(f"folder:{tmp_path}", image_size=8, batch_size=7, seed=1,
                              augment=False)
    info = splits.info
    assert info.class_names == sorted(COLOURS)
    assert info.channels == 3  # mixed grey and colour -> colour
    assert sum(info.num_examples.values()) == 30
    assert info.num_examples == {"train": 24, "validation": 3, "test": 3}
    assert len(info.skipped_files) == 1 and "broken.png" in info.skipped_files[0]
    assert "1 image files" in caplog.text and "broken.png" in caplog.text
    for split in (splits.train, splits.validation, splits.test):
        images, labels = _all_examples(split)
        assert images.shape[1:] == (8, 8, 3) and images.dtype == np.float32
        for image, label in zip(images, labels):
            expected = np.array(COLOURS[info.class_names[label]]) / 255
            if np.ptp(image.mean(axis=(0, 1))) > 0.01:  # a colour file
                np.testing.assert_allclose(image.mean(axis=(0, 1)), expected, atol=0.03)
            else:  # the PGM: grey copied to the three channels
                np.testing.assert_allclose(image[..., 0], expected[0], atol=1e-6)


def test_greyscale_folder_keeps_one_channel_or_converts(tmp_path):
    _make_class_folders(tmp_path, per_class=5, grey_only=True)
    grey = load_dataset(f"folder:{tmp_path}", image_size=6, validation_fraction=0.2,
                        test_fraction=0.2)
    assert grey.info.channels == 1
    images, _ = _all_examples(grey.test)
    assert images.shape[1:] == (6, 6, 1)
    rgb = load_dataset(f"folder:{tmp_path}", image_size=6, channels=3,
                       validation_fraction=0.2, test_fraction=0.2)
    images, labels = _all_examples(rgb.test)
    assert images.shape[1:] == (6, 6, 3)
    np.testing.assert_allclose(images[..., 0], images[..., 2])
    expected = np.array([COLOURS[rgb.info.class_names[label]][0] for label in labels]) / 255
    np.testing.assert_allclose(images[:, 2, 3, 1], expected, atol=1e-6)


def test_colour_to_grey_uses_luma_weights(tmp_path):
    _make_class_folders(tmp_path, per_class=4)
    splits = load_dataset(f"folder:{tmp_path}", image_size=5, channels=1, augment=False,
                          validation_fraction=0.25, test_fraction=0.25)
    images, labels = _all_examples(splits.test)
    assert images.shape[1:] == (5, 5, 1)
    for image, label in zip(images, labels):
        red, green, blue = COLOURS[splits.info.class_names[label]]
        luma = (0.2989 * red + 0.587 * green + 0.114 * blue) / 255
        assert abs(image.mean() - luma) < 0.03 or abs(image.mean() - red / 255) < 1e-6


def test_images_of_mixed_sizes_are_resized_for_reconstruction(tmp_path):
    """Smaller, larger, wide and tall images, PNG, BMP and a greyscale PGM, all come out at
    image_size; a solid colour stays that colour when resized (the reference)."""
    sizes = [(5, 7), (12, 12), (20, 9), (3, 30), (8, 8), (40, 16)]
    colours = []
    for person, name in enumerate(("ann", "bob")):
        for index, (height, width) in enumerate(sizes):
            if index == 5:
                grey = 100 + 50 * person
                colours.append((grey, grey, grey))
                _write(f"{tmp_path}/{name}/{index}.pgm", np.full((height, width), grey, np.uint8))
                continue
            colours.append((30 * index + 10, 120 * person + 20, 200))
            _write(f"{tmp_path}/{name}/{index}.{'bmp' if index == 4 else 'png'}",
                   _solid(colours[-1], height, width))
    splits = load_dataset(f"folder:{tmp_path}", image_size=8, batch_size=4, augment=False,
                          task="reconstruct", validation_fraction=0.2, test_fraction=0.2)
    assert splits.info.num_examples == {"train": 8, "validation": 2, "test": 2}
    found = []
    for split in (splits.train, splits.validation, splits.test):
        for images, targets in split:
            assert images.shape[1:] == (8, 8, 3)
            np.testing.assert_array_equal(images.numpy(), targets.numpy())
            for image in images.numpy():
                np.testing.assert_allclose(image, np.broadcast_to(image[0, 0], image.shape),
                                           atol=1e-6)
                found.append(tuple(int(v) for v in np.round(image[0, 0] * 255)))
    assert sorted(found) == sorted(colours)


def test_train_and_val_folders_val_becomes_test(tmp_path):
    _make_class_folders(tmp_path / "train", per_class=10)
    _make_class_folders(tmp_path / "val", per_class=3)
    source = load_folder_source(str(tmp_path), seed=0, validation_fraction=0.2,
                                test_fraction=0.1, max_examples=None)
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 24, "validation": 6, "test": 9}
    assert source.split_origin["test"] == "val/"
    assert "train/" in source.split_origin["validation"]


def test_train_validation_test_folders_are_used_as_they_are(tmp_path):
    for name, count in (("train", 4), ("validation", 2), ("test", 3)):
        _make_class_folders(tmp_path / name, per_class=count)
    splits = load_dataset(f"folder:{tmp_path}", image_size=8)
    assert splits.info.num_examples == {"train": 12, "validation": 6, "test": 9}


def test_carved_splits_are_seeded_stratified_and_disjoint(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        for index in range(10):
            _write(f"{tmp_path}/{name}/{index}.png", rng.integers(0, 256, (6, 6, 3), np.uint8))

    def contents(seed):
        source = load_folder_source(str(tmp_path), seed=seed, validation_fraction=0.2,
                                    test_fraction=0.2, max_examples=None)
        return {name: [(image.tobytes(), label) for image, label in
                       split.examples.as_numpy_iterator()]
                for name, split in source.splits.items()}

    first, again, other = contents(0), contents(0), contents(1)
    assert first == again
    assert first["test"] != other["test"]
    assert {name: len(examples) for name, examples in first.items()} == {
        "train": 18, "validation": 6, "test": 6}
    for name in ("validation", "test"):
        assert np.bincount([label for _, label in first[name]]).tolist() == [2, 2, 2]
    every_image = [image for examples in first.values() for image, _ in examples]
    assert len(set(every_image)) == 30


def test_max_examples_caps_every_split(tmp_path):
    _make_class_folders(tmp_path, per_class=10)
    splits = load_dataset(f"folder:{tmp_path}", image_size=8, max_examples=4,
                          validation_fraction=0.2, test_fraction=0.2)
    assert splits.info.num_examples == {"train": 4, "validation": 4, "test": 4}


def test_only_corrupt_files_is_an_error(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "x.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="none of the 2 image files .* could be decoded"):
        load_dataset(f"folder:{tmp_path}")


def test_class_folder_without_images_is_an_error(tmp_path):
    _make_class_folders(tmp_path, per_class=3)
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="empty"):
        load_dataset(f"folder:{tmp_path}")


def test_missing_folder_and_folder_without_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path}")


def test_train_split_is_shuffled_and_augmented_repeatably(tmp_path):
    _make_class_folders(tmp_path, per_class=10)

    def first_train_batch(seed):
        splits = load_dataset(f"folder:{tmp_path}", image_size=8, batch_size=30, seed=seed)
        return next(iter(splits.train))

    images, labels = first_train_batch(0)
    again_images, again_labels = first_train_batch(0)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    assert images.shape == (24, 8, 8, 3)
