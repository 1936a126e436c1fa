"""`load_dataset` refuses, before any training, data sets that cannot train what they are loaded
for (`keypoint_gnn.data.checks`): one line naming the class or split and the counts."""
import logging
import os
import struct

import numpy as np
import pytest
from PIL import Image

from keypoint_gnn.data import load_dataset
from keypoint_gnn.data.checks import check_source
from keypoint_gnn.data.sources import SourceData, SourceSplit
from keypoint_gnn.data.tfds_source import _split_instructions


def _folder(root, counts, corrupt=()):
    """PNG images per class ({class: count}); `corrupt` classes get one undecodable file only."""
    for name, count in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for index in range(count):
            Image.fromarray(np.full((6, 6, 3), index * 20 % 256, np.uint8)).save(
                root / name / f"{index}.png")
    for name in corrupt:
        os.makedirs(root / name, exist_ok=True)
        (root / name / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


def _idx_bytes(array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _idx(root, train_labels, test_labels=None):
    os.makedirs(root)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        if labels is not None:
            labels = np.asarray(labels, np.uint8)
            (root / f"{prefix}-images-idx3-ubyte").write_bytes(
                _idx_bytes(np.zeros((len(labels), 5, 5), np.uint8)))
            (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    return root


def _refusal(spec, **kwargs):
    with pytest.raises(ValueError) as error:
        load_dataset(spec, image_size=8, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


# 1. Fewer than two classes.

def test_one_class_folder_is_refused_for_classification(tmp_path):
    root = _folder(tmp_path / "x", {"cats": 12})
    assert _refusal(f"folder:{root}") == (
        f"folder:{root} has 1 class ('cats', 12 images); a classifier needs at least 2")
    # Reconstruction has no use for classes, so one class is fine there.
    assert load_dataset(f"folder:{root}", image_size=8, task="reconstruct").info.num_classes == 1


def test_one_class_is_named_before_the_splits_it_is_too_small_for(tmp_path):
    root = _folder(tmp_path, {"cats": 3})
    assert "has 1 class ('cats', 3 images); a classifier needs at least 2" in _refusal(
        f"folder:{root}")


def test_two_class_folders_of_which_one_has_no_decodable_image(tmp_path):
    root = _folder(tmp_path, {"cats": 12}, corrupt=["eels"])
    assert _refusal(f"folder:{root}") == (
        f"folder:{root} has images of only 1 of its 2 classes ('cats', 12 images; none of "
        "'eels'); a classifier needs at least 2")


def test_idx_labels_of_one_class(tmp_path):
    root = _idx(tmp_path / "i", [0] * 20, [0] * 5)
    assert _refusal(f"idx:{root}") == (
        f"idx:{root} has 1 class ('0', 25 images); a classifier needs at least 2")


def test_a_source_without_class_counts_is_checked_on_its_class_names():
    """TFDS: class names only (its labels are not read before training)."""
    split = SourceSplit(examples=None, num_examples=5)
    source = SourceData(name="tiny_tfds", class_names=["only"], channels=3,
                        splits={name: split for name in ("train", "validation", "test")},
                        split_origin={})
    with pytest.raises(ValueError, match=r"^tiny_tfds has 1 class \('only'\); a classifier "
                                         r"needs at least 2$"):
        check_source(source, task="classify", max_examples=None)
    assert check_source(source, task="reconstruct", max_examples=None) == []


# 2. Classes with too few images for the splits, or none in train.

def test_a_class_too_small_for_the_carved_splits(tmp_path):
    root = _folder(tmp_path, {"cats": 12, "dogs": 2})
    message = _refusal(f"folder:{root}", validation_fraction=0.3, test_fraction=0.3)
    assert message == (
        f"folder:{root}: class 'dogs' has 2 images: too few for the train / validation / test "
        "split (fractions validation 0.3, test 0.3); add images or lower the fractions")


def test_one_image_and_a_large_validation_fraction(tmp_path):
    root = _folder(tmp_path, {"cats": 12, "dogs": 1})
    message = _refusal(f"folder:{root}", validation_fraction=0.6, test_fraction=0.2)
    assert "class 'dogs' has 1 image: too few for the train / validation / test split" in message
    assert "(fractions validation 0.6, test 0.2); add images or lower the fractions" in message


def test_every_class_too_small_is_named(tmp_path):
    root = _folder(tmp_path, {"cats": 12, "dogs": 2, "cows": 1})
    message = _refusal(f"folder:{root}", validation_fraction=0.6, test_fraction=0.3)
    assert ("classes 'cows' (1 image), 'dogs' (2 images) have too few images for the train / "
            "validation / test split (fractions validation 0.6, test 0.3)") in message


def test_carving_validation_from_a_train_folder_names_it(tmp_path):
    _folder(tmp_path / "train", {"cats": 10, "dogs": 1})
    _folder(tmp_path / "val", {"cats": 2, "dogs": 2})
    message = _refusal(f"folder:{tmp_path}", validation_fraction=0.6, test_fraction=0.1)
    assert ("class 'dogs' has 1 image in train/: too few for the train / validation split "
            "(fractions validation 0.6)") in message


def test_a_class_only_in_the_given_held_out_split(tmp_path):
    _folder(tmp_path / "train", {"cats": 6, "dogs": 4}, corrupt=["eels"])
    _folder(tmp_path / "val", {"cats": 2, "dogs": 2, "eels": 3})
    assert _refusal(f"folder:{tmp_path}") == (
        f"folder:{tmp_path}: class 'eels' has 3 images in test (val/) but none in train "
        "(train/); a classifier cannot learn a class it never trains on: add its images to the "
        "training data")


def test_an_idx_test_class_the_train_files_lack(tmp_path):
    root = _idx(tmp_path / "i", [0, 1] * 20, [0, 1, 2] * 5)
    assert "class '2' has 5 images in test (t10k files) but none in train (train files)" in (
        _refusal(f"idx:{root}"))


def test_a_class_whose_files_all_fail_to_decode(tmp_path):
    root = _folder(tmp_path, {"cats": 12, "dogs": 5}, corrupt=["eels"])
    assert _refusal(f"folder:{root}") == (
        f"folder:{root}: class 'eels' has no images that could be decoded; a classifier cannot "
        "learn it: add images or remove the class folder")


def test_small_classes_without_held_out_images_load_with_warnings(tmp_path, caplog):
    """Default fractions give a 2-image class no validation or test image: usable, reported."""
    root = _folder(tmp_path, {"cats": 12, "dogs": 2})
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(f"folder:{root}", image_size=8)
    assert splits.info.num_examples == {"train": 12, "validation": 1, "test": 1}
    warnings = splits.info.warnings
    assert len(warnings) == 2
    assert warnings[0].startswith(f"folder:{root}: the validation split has no images of class "
                                  "'dogs': it comes from all folders (10%")
    assert "test split has no images of class 'dogs'" in warnings[1]
    assert warnings[1].endswith("; test accuracy does not cover it")
    assert all(warning in caplog.text for warning in warnings)


def test_unused_idx_label_values_are_a_warning(tmp_path):
    """IDX classes are 0 .. the largest label: EMNIST letters never use 0."""
    root = _idx(tmp_path / "i", [1, 3] * 20, [1, 3] * 5)
    splits = load_dataset(f"idx:{root}", image_size=8)
    assert splits.info.num_classes == 4
    assert splits.info.warnings == [
        (f"idx:{root}: 2 classes ('0', '2') of the 4 have no images in any split; the "
         "classifier never predicts them")]


# 3. Empty splits, given, carved or capped.

def test_a_given_split_without_examples(tmp_path):
    root = _idx(tmp_path / "i", [0, 1] * 20, [])
    assert _refusal(f"idx:{root}", task="reconstruct") == (
        f"idx:{root}: the test split is empty (t10k files: 0 examples); add examples")
    root = _idx(tmp_path / "j", [], [0, 1] * 3)
    assert "the train split is empty (train files: 0 examples)" in _refusal(f"idx:{root}")


def test_a_carved_split_the_fractions_leave_empty(tmp_path):
    root = _folder(tmp_path, {"cats": 2, "dogs": 2})
    assert _refusal(f"folder:{root}") == (
        f"folder:{root}: the validation split would be empty: validation_fraction=0.1 of the 4 "
        "examples rounds to 0 for every class (each class gives round(fraction x its images)); "
        "raise the fraction or add examples")


def test_carved_splits_that_leave_train_empty_for_reconstruction(tmp_path):
    root = _folder(tmp_path, {"cats": 2})
    assert "the train split would be empty: the carved validation and test splits (fractions " \
           "validation 0.3, test 0.3) take all 2 examples" in _refusal(
               f"folder:{root}", task="reconstruct", validation_fraction=0.3, test_fraction=0.3)


def test_a_folder_of_one_image_is_refused_for_reconstruction(tmp_path):
    """One image cannot fill three splits: one line before any pipeline, not a TF traceback."""
    root = _folder(tmp_path / "me", {"me": 1})
    assert _refusal(f"folder:{root}", task="reconstruct") == (
        f"folder:{root}: the validation split would be empty: validation_fraction=0.1 of the 1 "
        "example rounds to 0 for every class (each class gives round(fraction x its images)); "
        "raise the fraction or add examples")
    assert _refusal(f"folder:{root}", task="reconstruct", validation_fraction=0.6,
                    test_fraction=0.3).startswith(f"folder:{root}: the train split would be empty")
    # The image without a class folder around it: the layout is named instead.
    os.makedirs(tmp_path / "loose")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "loose" / "alone.png")
    with pytest.raises(FileNotFoundError, match="has no class sub-folders; put each class's "):
        load_dataset(f"folder:{tmp_path / 'loose'}", image_size=8, task="reconstruct")


def test_tfds_split_that_would_be_empty_says_why():
    with pytest.raises(ValueError, match=r"^tiny: the test split would be empty: test_fraction="
                                         r"0.1 of TFDS train's 3 examples rounds to 0"):
        _split_instructions({"train": 3}, 0.1, 0.1, None, "tiny")
    _, counts, _, carved = _split_instructions({"train": 20, "test": 4}, 0.1, 0.1, 2, "tiny")
    assert counts == {"train": 2, "validation": 2, "test": 2} and carved == {"validation": 0.1}


def test_max_examples_that_leaves_train_one_class(tmp_path):
    root = _folder(tmp_path, {"cats": 12, "dogs": 2})
    assert _refusal(f"folder:{root}", max_examples=1) == (
        f"folder:{root}: the train split holds images of only 1 class ('dogs', 1 image) after "
        "max_examples=1 kept 1 of its 12; a classifier needs at least 2; raise max_examples")
    with pytest.raises(ValueError, match=r"^builtin: the train split holds images of only "
                                         r"1 class \('constellation_0', 1 image\) after "
                                         r"max_examples=1 kept 1;"):
        load_dataset("builtin", image_size=32, max_examples=1)
    assert load_dataset("builtin", image_size=32, max_examples=1,
                        task="reconstruct").info.num_examples["train"] == 1


def test_max_examples_that_drops_classes_loads_with_warnings(tmp_path):
    """A quick run's seeded subset may miss classes: reported, not refused."""
    root = _idx(tmp_path / "i", list(range(10)) * 30, list(range(10)) * 5)
    splits = load_dataset(f"idx:{root}", image_size=8, max_examples=8)
    assert splits.info.num_examples == {"train": 8, "validation": 8, "test": 8}
    train_warning = splits.info.warnings[0]
    assert train_warning.startswith(f"idx:{root}: the train split has no images of ")
    assert "max_examples=8 kept 8 of its 270; the classifier never learns them" in train_warning


@pytest.mark.parametrize("max_examples", [32, 48])
def test_the_tiny_builtin_sets_of_quick_runs_load_without_warnings(max_examples):
    splits = load_dataset("builtin", image_size=32, max_examples=max_examples)
    assert splits.info.warnings == []


# Through the command line.

def test_classify_cli_refuses_a_one_class_folder_before_training(tmp_path, capsys):
    from trainers import classify, common

    root = _folder(tmp_path / "data", {"cats": 12})
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: classify.main([
            "--dataset", f"folder:{root}", "--epochs", "1", "--no-export", "--out", str(out),
            "--verbose", "0"]))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in error
    assert lines[0] == (f"error: folder:{root} has 1 class ('cats', 12 images); a classifier "
                        "needs at least 2")
    assert not (out / "model.keras").exists()
