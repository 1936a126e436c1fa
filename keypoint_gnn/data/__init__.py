"""Data for keypoint_gnn: the built-in generated set, TFDS / image-folder / IDX sources, and
the tf.data pipeline.

    splits = load_dataset("builtin", image_size=48, batch_size=64)
    model.fit(splits.train, validation_data=splits.validation)
    images, labels = next(iter(splits.test))   # (B, 48, 48, 3) float32 in [0, 1], (B,) int32
    splits.test_parts                          # (n_test, 4, 2) (y, x) of the parts, pixels

Modules: `builtin` draws the constellation images (NumPy); `sources` names the specs and
defines what a source hands over; `builtin_source`, `folder`, `idx` and `tfds_source` are the
sources; `splitting` carves seeded splits; `holdout` keeps whole classes out of training for a
test_unseen split; `pipeline` is the tf.data pipeline; `loading` is `load_dataset`; `throughput`
times a pipeline on its own.
"""
from keypoint_gnn.data.builtin import (
    BuiltinOptions,
    ConstellationImages,
    generate_splits,
)
from keypoint_gnn.data.loading import DatasetInfo, Splits, load_dataset
from keypoint_gnn.data.pipeline import Augmentation
from keypoint_gnn.data.throughput import pipeline_images_per_second

__all__ = [
    "Augmentation",
    "BuiltinOptions",
    "ConstellationImages",
    "DatasetInfo",
    "Splits",
    "generate_splits",
    "load_dataset",
    "pipeline_images_per_second",
]
