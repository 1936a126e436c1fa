"""Shared by the data tests: a small built-in set and batches gathered into arrays."""
import numpy as np

from keypoint_gnn.data import BuiltinOptions, load_dataset

OPTIONS = BuiltinOptions(num_examples=200)


def load_builtin(**kwargs):
    """`load_dataset("builtin", ...)` on the small set unless `builtin_options` is given."""
    kwargs.setdefault("builtin_options", OPTIONS)
    return load_dataset("builtin", **kwargs)


def concat(dataset):
    """(images, targets) of every batch of `dataset`, concatenated."""
    images, targets = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(targets)
