"""The pipeline-alone throughput: images counted, short data sets repeated, bad input."""
import pytest

from keypoint_gnn._backend import tf
from keypoint_gnn.data import pipeline_images_per_second


def _pairs(examples, batch):
    images = tf.zeros((examples, 8, 8, 3))
    labels = tf.zeros((examples,), tf.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def test_counts_the_images_of_the_timed_batches_only():
    # 10 examples in batches of 4: 4, 4, 2, then repeated. Warm-up takes the first batch; the
    # three timed ones are 4, 2, 4 images.
    report = pipeline_images_per_second(_pairs(10, 4), batches=3, warmup=1)
    assert report["images"] == 10 and report["batches"] == 3
    assert report["images_per_second"] == pytest.approx(10 / report["seconds"])


def test_images_without_labels_and_a_data_set_shorter_than_asked():
    images = tf.data.Dataset.from_tensor_slices(tf.zeros((6, 8, 8, 1))).batch(3)  # 2 batches
    report = pipeline_images_per_second(images, batches=5, warmup=0)
    assert report["images"] == 15


@pytest.mark.parametrize("kwargs, message", [
    ({"batches": 0}, "batches=0 must be an integer >= 1"),
    ({"batches": 2.5}, "batches=2.5 must be an integer >= 1"),
    ({"warmup": -1}, "warmup=-1 must be an integer >= 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline_images_per_second(_pairs(4, 2), **kwargs)


@pytest.mark.parametrize("warmup", [0, 2])
def test_an_empty_data_set_is_an_error_not_a_hang(warmup):
    empty = _pairs(4, 2).take(0)
    with pytest.raises(ValueError, match="yields no batches"):
        pipeline_images_per_second(empty, batches=3, warmup=warmup)
