"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), read with NumPy.

An IDX file is a 4-byte magic number `0x00 0x00 <type> <ndim>`, then `ndim` big-endian uint32
dimension sizes, then the values in C order and big-endian. A folder holds
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte` and, for the test split,
`t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`; each may be gzipped (`.gz`), and
`train-images.idx3-ubyte` (a dot before `idx`) is accepted too.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from keypoint_gnn.data.sources import SourceData, SourceSplit
from keypoint_gnn.data.splitting import limit_examples, stratified_split

IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str) -> np.ndarray:
    """The array stored in one IDX file (gzipped when the name ends in `.gz`).

    Raises:
      FileNotFoundError: no such file.
      ValueError: a bad magic number, unknown type code, or a size that disagrees with the
        header; the message names the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} does not exist")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                content = stream.read()
        else:
            with open(path, "rb") as stream:
                content = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"IDX file {path!r} cannot be read: {error}") from error
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError(
            f"IDX file {path!r} has magic number {content[:4].hex() or '(empty)'}; an IDX file "
            "starts with 0x0000 followed by a type byte and a dimension count")
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_TYPES:
        raise ValueError(
            f"IDX file {path!r} has type code 0x{type_code:02x}; valid codes are "
            f"{', '.join(f'0x{code:02x}' for code in IDX_TYPES)}")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise ValueError(f"IDX file {path!r} is {len(content)} bytes, shorter than its "
                         f"{header_size}-byte header")
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) != expected:
        raise ValueError(
            f"IDX file {path!r} is {len(content)} bytes but its header (shape {shape}, "
            f"{dtype.name}) needs {expected}")
    return np.frombuffer(content, dtype, offset=header_size).reshape(shape).astype(
        dtype.newbyteorder("="))


def find_idx_file(directory: str, prefix: str, kind: str) -> str | None:
    """Path of `<prefix>-<kind>-idx?-ubyte[.gz]` (or `<prefix>-<kind>.idx?-ubyte`) or None."""
    rank = 3 if kind == "images" else 1
    for separator in ("-", "."):
        for suffix in ("", ".gz"):
            path = os.path.join(directory, f"{prefix}-{kind}{separator}idx{rank}-ubyte{suffix}")
            if os.path.isfile(path):
                return path
    return None


def _read_pair(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, H, W, C) uint8, labels (N,) int64) of one prefix, or None if absent."""
    images_path = find_idx_file(directory, prefix, "images")
    labels_path = find_idx_file(directory, prefix, "labels")
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        present, missing = (images_path, "images") if images_path else (labels_path, "labels")
        raise FileNotFoundError(
            f"found {present!r} but no matching {prefix}-{missing}-idx?-ubyte[.gz] in "
            f"{directory!r}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"IDX file {images_path!r} holds shape {images.shape}; images must be "
                         "(N, H, W) or (N, H, W, C) with C 1 or 3")
    if images.dtype != np.uint8:
        raise ValueError(f"IDX file {images_path!r} holds {images.dtype} values; images must be "
                         "uint8 (type code 0x08)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"IDX file {labels_path!r} holds {labels.dtype} shape {labels.shape}; "
                         "labels must be one integer per image")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path!r} has {len(labels)} labels but {images_path!r} has "
                         f"{len(images)} images")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"IDX file {labels_path!r} has a negative label {labels.min()}")
    return images, labels.astype(np.int64)


def load_idx_source(directory: str, *, seed: int, validation_fraction: float,
                    test_fraction: float, max_examples: int | None) -> SourceData:
    """Reads a folder of IDX files; validation (and test, without t10k files) from train.

    Classes are 0 .. max label, named by their index. Flip augmentation is off by default,
    since mirrored digits and characters are other symbols.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"idx:{directory} is not a folder; give the folder that holds "
                                "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    train = _read_pair(directory, "train")
    if train is None:
        raise FileNotFoundError(f"idx:{directory} has no train-images-idx3-ubyte[.gz] / "
                                f"train-labels-idx1-ubyte[.gz]; it holds {sorted(os.listdir(directory))}")
    test, test_prefix = _read_pair(directory, "t10k"), "t10k"
    if test is None:
        test, test_prefix = _read_pair(directory, "test"), "test"
    fractions = {"validation": validation_fraction}
    origin = {"train": "train files", "validation": f"train files ({validation_fraction:.0%}, "
                                                   f"seed {seed})", "test": f"{test_prefix} files"}
    if test is None:
        fractions["test"] = test_fraction
        origin["test"] = f"train files ({test_fraction:.0%}, seed {seed})"
    indices = stratified_split(train[1], fractions, seed, allow_empty=True)
    arrays = {name: (train[0][index], train[1][index]) for name, index in indices.items()}
    if test is not None:
        arrays["test"] = test
    splits = {}
    for name in ("train", "validation", "test"):
        images, labels = arrays[name]
        keep = limit_examples(np.arange(len(labels)), max_examples, seed)
        splits[name] = SourceSplit.from_arrays(images[keep], labels[keep], labels)
    every_label = np.concatenate([labels for _, labels in arrays.values()])
    num_classes = int(every_label.max()) + 1 if len(every_label) else 1
    return SourceData(
        name=f"idx:{directory}",
        class_names=[str(index) for index in range(num_classes)],
        channels=int(train[0].shape[-1]),
        splits=splits,
        split_origin=origin,
        flip_invariant=False,  # MNIST digits and KMNIST characters change when mirrored
        image_shape=tuple(train[0].shape[1:3]),
        carved_fractions=fractions,
        unused_classes_allowed=True,  # classes are 0 .. the largest label
    )
