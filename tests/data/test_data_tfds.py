"""TensorFlow Datasets sources: offline failure is fast and says what to do; prepared data
loads without a network."""
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keypoint_gnn.data import load_dataset


class KeypointGnnTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Eight 10x10 RGB images per class in 'train', three in 'test'; no downloads."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(10, 10, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "bright"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "test": self._generate_examples(3)}

    def _generate_examples(self, per_class):
        for label, value in enumerate((40, 220)):
            for index in range(per_class):
                image = np.full((10, 10, 3), value + index, dtype=np.uint8)
                yield f"{label}-{index}", {"image": image, "label": label}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["cifar10", "imagenette/160px", "fashion_mnist"])
def test_unprepared_name_fails_fast_with_instructions(tmp_path, name):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as error:
        load_dataset(name, data_dir=str(tmp_path))
    assert time.monotonic() - start < 20
    message = str(error.value)
    assert name in message and str(tmp_path) in message
    assert "download" in message and "tfds build" in message
    assert "folder:PATH" in message and "idx:PATH" in message


@pytest.mark.timeout(60)
def test_unknown_tfds_name_says_how_to_find_names(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset_xyz.*list_builders"):
        load_dataset("no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="imagenette/no_such_config"):
        load_dataset("imagenette/no_such_config", data_dir=str(tmp_path))


@pytest.mark.timeout(120)
def test_prepared_data_set_loads_offline(tmp_path):
    KeypointGnnTinyShapes(data_dir=str(tmp_path)).download_and_prepare()
    splits = load_dataset("keypoint_gnn_tiny_shapes", data_dir=str(tmp_path), image_size=6,
                          batch_size=4, validation_fraction=0.25, augment=False)
    info = splits.info
    assert info.class_names == ["dark", "bright"] and info.channels == 3
    assert info.num_examples == {"train": 12, "validation": 4, "test": 6}
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in splits.test])
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (6, 6, 6, 3) and labels.dtype == np.int32
    for image, label in zip(images, labels):
        base = (40, 220)[label] / 255
        assert base - 1e-6 <= image.min() and image.max() <= base + 3 / 255 + 1e-6
    grey = load_dataset("tfds:keypoint_gnn_tiny_shapes", data_dir=str(tmp_path), image_size=10,
                        channels=1, max_examples=2)
    assert grey.info.num_examples == {"train": 2, "validation": 2, "test": 2}
    assert next(iter(grey.train))[0].shape == (2, 10, 10, 1)
