"""IDX (MNIST-format) files: parsing, gzip, splits, and malformed files."""
import gzip
import struct

import numpy as np
import pytest

from keypoint_gnn.data import load_dataset
from keypoint_gnn.data.idx import read_idx


def _idx_bytes(array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, array, compress):
    content = _idx_bytes(array)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as stream:
            stream.write(content)
    else:
        with open(path, "wb") as stream:
            stream.write(content)


def _make_idx_folder(folder, compress, with_test=True, train_count=60, test_count=12):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train_count, 7, 5), np.uint8),
        "train-labels-idx1-ubyte": np.arange(train_count, dtype=np.uint8) % 3,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test_count, 7, 5), np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(test_count, dtype=np.uint8) % 3,
    }
    for name, array in arrays.items():
        if with_test or name.startswith("train"):
            _write(f"{folder}/{name}", array, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write(f"{tmp_path}/x-idx3-ubyte", array, compress)
    suffix = ".gz" if compress else ""
    np.testing.assert_array_equal(read_idx(f"{tmp_path}/x-idx3-ubyte{suffix}"), array)


def test_read_idx_big_endian_int32(tmp_path):
    array = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "labels").write_bytes(_idx_bytes(array, type_code=0x0C))
    np.testing.assert_array_equal(read_idx(str(tmp_path / "labels")), array)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_splits_and_pixels(tmp_path, compress):
    arrays = _make_idx_folder(tmp_path, compress)
    splits = load_dataset(f"idx:{tmp_path}", image_size=7, batch_size=5,
                          validation_fraction=0.2)
    info = splits.info
    assert info.num_examples == {"train": 48, "validation": 12, "test": 12}
    assert info.num_classes == 3 and info.channels == 1
    assert info.augmentation.flip is False  # digits are not mirror-symmetric
    images = np.concatenate([x.numpy() for x, _ in splits.test])
    labels = np.concatenate([y.numpy() for _, y in splits.test])
    assert images.shape == (12, 7, 7, 1)
    np.testing.assert_array_equal(labels, arrays["t10k-labels-idx1-ubyte"])
    # The pipeline stretches 5 columns to 7, so compare the first and last columns only.
    source = arrays["t10k-images-idx3-ubyte"] / 255
    np.testing.assert_allclose(images[:, :, 0, 0], source[:, :, 0], atol=0.3)
    same_size = load_dataset(f"idx:{tmp_path}", image_size=7, channels=3)
    assert next(iter(same_size.test))[0].shape[-1] == 3


def test_idx_without_test_files_carves_test_from_train(tmp_path):
    _make_idx_folder(tmp_path, compress=False, with_test=False)
    splits = load_dataset(f"idx:{tmp_path}", image_size=5, validation_fraction=0.1,
                          test_fraction=0.2)
    assert splits.info.num_examples == {"train": 42, "validation": 6, "test": 12}


def test_exact_pixels_at_native_size(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 6, 6), np.uint8)
    _write(f"{tmp_path}/train-images-idx3-ubyte", images, False)
    _write(f"{tmp_path}/train-labels-idx1-ubyte", np.arange(30, dtype=np.uint8) % 2, False)
    _write(f"{tmp_path}/t10k-images-idx3-ubyte", images[:4], False)
    _write(f"{tmp_path}/t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), False)
    splits = load_dataset(f"idx:{tmp_path}", image_size=6, task="reconstruct")
    inputs, targets = next(iter(splits.test))
    np.testing.assert_allclose(inputs[..., 0], images[:4] / 255, atol=1e-6)
    np.testing.assert_array_equal(inputs, targets)


def test_bad_magic_number_names_the_file(tmp_path):
    _make_idx_folder(tmp_path, compress=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic number 12340803"):
        load_dataset(f"idx:{tmp_path}")


def test_size_mismatch_names_the_file(tmp_path):
    _make_idx_folder(tmp_path, compress=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">BBBBI", 0, 0, 8, 1, 12) + bytes(5))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz.* 13 bytes .* needs 20"):
        load_dataset(f"idx:{tmp_path}")


def test_label_count_mismatch(tmp_path):
    _make_idx_folder(tmp_path, compress=False)
    _write(f"{tmp_path}/train-labels-idx1-ubyte", np.zeros(59, np.uint8), False)
    with pytest.raises(ValueError, match="59 labels .* 60 images"):
        load_dataset(f"idx:{tmp_path}")


def test_corrupt_gzip_names_the_file(tmp_path):
    _make_idx_folder(tmp_path, compress=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_dataset(f"idx:{tmp_path}")


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_dataset(f"idx:{tmp_path / 'absent'}")
    with pytest.raises(FileNotFoundError, match="no train-images"):
        load_dataset(f"idx:{tmp_path}")
    _make_idx_folder(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*no matching"):
        load_dataset(f"idx:{tmp_path}")
