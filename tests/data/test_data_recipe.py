"""The real-data recipe's data parts: random resized crop, mixup / cutmix, the file cache."""
import subprocess
import sys

import numpy as np
import pytest
from builtin_helpers import concat as _concat
from builtin_helpers import load_builtin as _load

from keypoint_gnn._backend import tf
from keypoint_gnn.data import Augmentation
from keypoint_gnn.data.cache import FileCache
from keypoint_gnn.data.mixing import Mixing, cutmix, cutmix_box, mix_batch, mixup
from keypoint_gnn.data.pipeline import (
    RESIZED_CROP_AREA,
    RESIZED_CROP_RATIO,
    resized_crop_box,
)


def test_resized_crop_boxes_keep_area_and_ratio_in_range():
    for index in range(200):
        y0, x0, y1, x1 = resized_crop_box(tf.constant([index, 7], tf.int64)).numpy()
        height, width = y1 - y0, x1 - x0
        assert 0 <= y0 and y1 <= 1 + 1e-6 and 0 <= x0 and x1 <= 1 + 1e-6
        if height < 1 and width < 1:  # neither side capped at the whole image
            assert RESIZED_CROP_AREA[0] - 1e-5 <= height * width <= RESIZED_CROP_AREA[1] + 1e-5
            assert RESIZED_CROP_RATIO[0] - 1e-5 <= width / height <= RESIZED_CROP_RATIO[1] + 1e-5


def test_resized_crop_of_the_whole_image_is_the_image():
    box = resized_crop_box(tf.constant([1, 2], tf.int64), area=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(box.numpy(), [0, 0, 1, 1], atol=1e-6)
    image = np.random.default_rng(0).random((1, 9, 9, 3)).astype(np.float32)
    cropped = tf.image.crop_and_resize(image, box[None], [0], [9, 9]).numpy()
    np.testing.assert_allclose(cropped, image, atol=1e-5)


def test_resized_crop_keeps_labels_and_is_repeatable():
    plain_images, plain_labels = _concat(_load(augment="none", batch_size=200).train)
    splits = _load(augment="flip,resized_crop", batch_size=200, seed=3)
    assert splits.info.augmentation == Augmentation(flip=True, crop_padding=0, resized_crop=True)
    images, labels = _concat(splits.train)
    again, _ = _concat(_load(augment="flip,resized_crop", batch_size=200, seed=3).train)
    assert sorted(labels) == sorted(plain_labels)
    np.testing.assert_array_equal(images, again)
    assert images.shape == plain_images.shape and not np.allclose(np.sort(images.ravel()),
                                                                  np.sort(plain_images.ravel()))
    assert Augmentation.parse("resized_crop", True).words() == "resized_crop"
    with pytest.raises(ValueError, match="not both crops"):
        Augmentation.parse("crop,resized_crop", True)


def test_mixup_matches_numpy():
    rng = np.random.default_rng(1)
    images = rng.random((4, 5, 5, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    mixed, weights = mixup(images, labels, 0.3)
    np.testing.assert_allclose(mixed, 0.3 * images + 0.7 * images[::-1], atol=1e-6)
    np.testing.assert_allclose(weights, 0.3 * labels + 0.7 * labels[::-1], atol=1e-6)


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area():
    rng = np.random.default_rng(2)
    images = rng.random((3, 8, 10, 1)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)
    mixed, weights = cutmix(images, labels, tf.constant([2, 3, 6, 8]))
    expected = images.copy()
    expected[:, 2:6, 3:8] = images[::-1, 2:6, 3:8]
    np.testing.assert_allclose(mixed, expected)
    pasted = 4 * 5 / 80
    np.testing.assert_allclose(weights, (1 - pasted) * labels + pasted * labels[::-1], atol=1e-6)
    # The box: sides sqrt(1 - lam) of the image's (before clipping at the edges).
    y0, x0, y1, x1 = cutmix_box(tf.constant([0, 5], tf.int64), 0.75, 40, 40).numpy()
    assert 0 <= y0 <= y1 <= 40 and 0 <= x0 <= x1 <= 40 and y1 - y0 <= 20 and x1 - x0 <= 20


def test_mix_batch_with_both_takes_one_of_the_two_per_batch():
    rng = np.random.default_rng(3)
    images = rng.random((4, 6, 6, 1)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)
    kinds = set()
    for index in range(30):
        mixed, weights = mix_batch(images, labels, tf.constant([index, 0], tf.int64),
                                   Mixing(mixup=0.4, cutmix=1.0))
        mixed, weights = mixed.numpy(), weights.numpy()
        np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-5)
        lam = weights[0, 0]  # the share of the first image's own class
        if np.allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-5):
            kinds.add("mixup")
        else:  # cutmix: every pixel comes from one image or its partner
            own, partner = np.isclose(mixed, images), np.isclose(mixed, images[::-1])
            assert np.all(own | partner)
            kinds.add("cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_mixed_train_labels_are_label_weights_and_other_splits_keep_integers():
    splits = _load(mixup=0.2, cutmix=1.0, batch_size=50)
    assert splits.info.mixing == Mixing(0.2, 1.0)
    _, weights = _concat(splits.train)
    assert weights.shape == (160, 6) and weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-5)
    assert not np.all(np.isin(weights, [0, 1]))  # mixed, not plain one-hot
    for dataset in (splits.validation, splits.test):
        assert _concat(dataset)[1].dtype == np.int32
    with pytest.raises(ValueError, match="task='reconstruct' has none"):
        _load(mixup=0.2, task="reconstruct")
    with pytest.raises(ValueError, match="mixup=-1 must be a number >= 0"):
        _load(mixup=-1)


def test_info_says_whether_flips_keep_the_class():
    assert _load().info.flip_invariant is False  # the built-in constellations change when mirrored


def test_file_cache_gives_the_memory_pipelines_batches_and_is_reused(tmp_path):
    folder = tmp_path / "cache"
    memory = _load(batch_size=40, seed=4)
    cached = _load(batch_size=40, seed=4, cache=str(folder))
    assert cached.info.cache == str(folder)
    for split in ("train", "validation", "test"):
        for ours, theirs in zip(_concat(getattr(memory, split)), _concat(getattr(cached, split))):
            np.testing.assert_array_equal(ours, theirs)
    indexes = sorted(folder.glob("*.index"))
    assert len(indexes) == 3  # one per split
    written = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = _load(batch_size=40, seed=4, cache=str(folder))
    _concat(again.train)
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == written  # read only
    _load(batch_size=40, seed=5, cache=str(folder))  # another seed draws other built-in images
    assert len(sorted(folder.glob("*.index"))) == 6


def test_an_interrupted_cache_write_is_repaired(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    for suffix in ("_0.lockfile", "_0.data-00000-of-00001.tempstate1"):
        (tmp_path / f"writing-{dead_pid}-abc{suffix}").write_text("partial")
    examples = tf.data.Dataset.from_tensor_slices((np.arange(6, dtype=np.uint8), np.arange(6)))
    cache = FileCache(tmp_path, {"any": 1})
    assert not cache.complete
    values = [int(x) for x, _ in cache(examples)]
    assert values == list(range(6)) and cache.complete
    assert not list(tmp_path.glob("writing-*"))


def test_a_cache_folder_that_cannot_be_made_is_refused(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ValueError, match=r"cache='.*file/sub': cannot create the folder"):
        _load(cache=str(tmp_path / "file" / "sub"))
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize("augment", ["flip,resized_crop", "flip,crop"])
def test_crops_and_flips_keep_each_image_with_its_own_label(tmp_path, augment):
    """A folder of one solid colour per class (red = 40 x class + 20): after the photo
    augmentations every training image still shows its own class's colour. (Sorted labels
    alone would not notice images shuffled away from their labels.)"""
    from PIL import Image

    from keypoint_gnn.data import load_dataset

    classes, each, size = 5, 8, 16
    for label in range(classes):
        (tmp_path / f"class{label}").mkdir()
        for index in range(each):
            pixels = np.full((size, size, 3), 90, np.uint8)
            pixels[..., 0] = 40 * label + 20
            Image.fromarray(pixels).save(tmp_path / f"class{label}" / f"{index}.png")
    splits = load_dataset(f"folder:{tmp_path}", image_size=size, batch_size=6, seed=1,
                          augment=augment, validation_fraction=0.1, test_fraction=0.1)
    assert splits.info.class_names == [f"class{label}" for label in range(classes)]
    applied = splits.info.augmentation
    assert applied.flip and (applied.resized_crop if "resized" in augment else applied.crop_padding > 0)
    images, labels = _concat(splits.train)
    assert len(labels) == splits.info.num_examples["train"] and len(set(labels)) == classes
    # The median over each image: crops resample a solid image to itself, pad-crop's padding
    # covers less than half of it.
    red = np.median(images[..., 0].reshape(len(images), -1), axis=1)
    np.testing.assert_array_equal(np.round((red * 255 - 20) / 40).astype(int), labels)
