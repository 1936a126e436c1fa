"""The built-in constellation set: determinism, ground truth, balance and splits."""
import numpy as np
import pytest

from keypoint_gnn.data import builtin
from keypoint_gnn.data.builtin import (
    BuiltinOptions,
    constellation_distance,
    generate_splits,
)

SMALL = BuiltinOptions(num_examples=240)
SIZES = {"train": 180, "validation": 30, "test": 30}


@pytest.fixture(scope="module")
def splits():
    return generate_splits(48, seed=3, split_sizes=SIZES, options=SMALL)


def test_same_seed_same_images_different_seed_different():
    first = generate_splits(32, seed=1, split_sizes={"train": 20}, options=SMALL)["train"]
    again = generate_splits(32, seed=1, split_sizes={"train": 20}, options=SMALL)["train"]
    other = generate_splits(32, seed=2, split_sizes={"train": 20}, options=SMALL)["train"]
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.part_positions, again.part_positions)
    assert not np.array_equal(first.images, other.images)
    np.testing.assert_array_equal(first.templates, other.templates)  # classes do not move


@pytest.mark.parametrize("image_size", [32, 48, 97])
def test_shapes_dtypes_and_range(image_size):
    split = generate_splits(image_size, seed=0, split_sizes={"train": 12}, options=SMALL)["train"]
    assert split.images.shape == (12, image_size, image_size, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (12,) and split.labels.dtype == np.int32
    assert split.part_positions.shape == (12, SMALL.num_parts, 2)
    assert split.part_positions.dtype == np.float32
    assert split.labels.min() >= 0 and split.labels.max() < SMALL.num_classes
    assert split.images.min() < 30 and split.images.max() == 255  # black and white markers


def _expected_marker(rows, scale):
    small = np.array([[int(c) for c in row] for row in rows]) * 255
    return np.kron(small, np.ones((scale, scale), dtype=int))


# Hand-drawn: from 44 px a white ring (corners cut) around black with a white centre dot,
# below it a 3x3 white ring around a black centre.
@pytest.mark.parametrize("image_size,rows,scale", [
    (32, ["111", "101", "111"], 1),
    (48, ["01110", "10001", "10101", "10001", "01110"], 1),
    (96, ["01110", "10001", "10101", "10001", "01110"], 2),
])
def test_parts_are_drawn_at_their_positions(image_size, rows, scale):
    split = generate_splits(image_size, 5, {"train": 16}, SMALL)["train"]
    marker = _expected_marker(rows, scale)
    half = marker.shape[0] // 2
    for image, parts in zip(split.images, split.part_positions):
        for y, x in parts.astype(int):
            patch = image[y - half:y - half + marker.shape[0], x - half:x - half + marker.shape[1]]
            for channel in range(3):
                np.testing.assert_array_equal(patch[..., channel], marker)


def test_parts_stay_inside_margin_and_apart(splits):
    margin = builtin.part_margin(48)
    for split in splits.values():
        parts = split.part_positions
        assert parts.min() >= margin and parts.max() <= 47 - margin
        gaps = np.linalg.norm(parts[:, :, None] - parts[:, None], axis=-1)
        gaps[:, np.arange(4), np.arange(4)] = np.inf
        assert gaps.min() >= 6  # 5-pixel markers never touch


def test_class_is_told_by_the_arrangement_of_parts(splits):
    templates = splits["test"].templates
    for parts, label in zip(splits["test"].part_positions, splits["test"].labels):
        distances = [constellation_distance(t, parts, SMALL.max_rotation_degrees)
                     for t in templates]
        assert int(np.argmin(distances)) == label


def test_constellation_distance_ignores_shift_scale_order_and_allowed_rotation():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (points @ rotation.T * 2.5 + 7.0)[[2, 0, 3, 1]]
    assert constellation_distance(points, moved, max_rotation_degrees=10) < 1e-9
    assert constellation_distance(points, moved, max_rotation_degrees=5) > 0.05


def test_templates_differ_pairwise():
    templates = builtin.class_templates(BuiltinOptions())
    assert templates.shape == (6, 4, 2)
    for i in range(6):
        for j in range(i + 1, 6):
            assert constellation_distance(templates[i], templates[j], 15) > 0.15


def test_classes_are_balanced(splits):
    for split in splits.values():
        counts = np.bincount(split.labels, minlength=SMALL.num_classes)
        assert counts.max() - counts.min() <= 1


def test_splits_have_requested_sizes_and_share_no_image(splits):
    assert {name: len(split.labels) for name, split in splits.items()} == SIZES
    seen = {}
    for name, split in splits.items():
        for image in split.images:
            assert seen.setdefault(image.tobytes(), name) == name


def test_default_split_is_80_10_10():
    sizes = {name: len(split.labels) for name, split in
             generate_splits(32, 0, None, BuiltinOptions(num_examples=50)).items()}
    assert sizes == {"train": 40, "validation": 5, "test": 5}


@pytest.mark.parametrize("field,value", [
    ("num_classes", 1), ("num_parts", 2), ("num_parts", 7), ("num_examples", 0),
    ("max_rotation_degrees", 200),
    ("scale_range", (0.9, 0.5)), ("jitter", -1), ("num_distractors", -2),
])
def test_bad_options_name_the_value(field, value):
    with pytest.raises(ValueError, match=field):
        BuiltinOptions(**{field: value})


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="image_size=24"):
        generate_splits(24, 0, {"train": 2}, SMALL)


def test_more_parts_and_classes():
    options = BuiltinOptions(num_classes=10, num_parts=6, num_examples=20)
    split = generate_splits(64, 0, {"train": 20}, options)["train"]
    assert split.part_positions.shape == (20, 6, 2)
    assert set(split.labels) == set(range(10))


def test_parse_options_converts_by_field_type():
    options = builtin.parse_options(
        "max_rotation_degrees=45, num_classes=10,scale_range=0.4-0.8,jitter=1,template_seed=7")
    assert options == BuiltinOptions(max_rotation_degrees=45.0, num_classes=10,
                                     scale_range=(0.4, 0.8), jitter=1.0, template_seed=7)
    assert isinstance(options.num_classes, int) and isinstance(options.jitter, float)
    assert isinstance(options.max_rotation_degrees, float)
    assert builtin.parse_options("num_parts=5") == BuiltinOptions(num_parts=5)


@pytest.mark.parametrize("text,message", [
    ("rotation=45", (r"builtin option 'rotation' is not one of num_examples, num_classes, .*"
                     r"scale_range, jitter, template_seed")),
    ("num_classes=4.5", r"builtin option num_classes='4.5' must be an integer"),
    ("num_classes=x", r"builtin option num_classes='x' must be an integer"),
    ("jitter=lots", r"builtin option jitter='lots' must be a number"),
    ("scale_range=0.5", r"builtin option scale_range='0.5' must be LOW-HIGH"),
    ("scale_range=0.4-0.6-0.8", r"scale_range='0.4-0.6-0.8' must be LOW-HIGH"),
    ("max_rotation_degrees=200", r"max_rotation_degrees=200.0 must be in \[0, 180\]"),
    ("scale_range=0.8-0.4", r"scale_range=\(0.8, 0.4\) must satisfy"),
    ("num_classes", (r"builtin option 'num_classes' must be KEY=VALUE with a key from "
                     r"num_examples, .*template_seed")),
    ("num_classes=", r"'num_classes=' must be KEY=VALUE"),
    ("num_classes=3,", r"'' must be KEY=VALUE"),
    ("num_classes=3,num_classes=4", r"num_classes is given twice"),
    ("", r"builtin options are empty.*num_examples, .*template_seed"),
    ("  ", r"builtin options are empty"),
])
def test_parse_options_errors_name_the_key_or_value(text, message):
    with pytest.raises(ValueError, match=message):
        builtin.parse_options(text)
