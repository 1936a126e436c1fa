"""DropPath (per-sample stochastic depth, beyond the paper): identity at inference; in training
each sample all zero or scaled by 1/keep, at the rate, reproducibly under a fixed seed."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import DropPath


@pytest.mark.parametrize("training", [False, None])
def test_identity_at_inference(rng, training):
    x = rng.normal(size=(8, 5, 3)).astype("float32")
    np.testing.assert_array_equal(DropPath(0.5)(x, training=training), x)


@pytest.mark.parametrize("shape", [(1000, 4, 3), (1000, 6)])
def test_training_drops_whole_samples_at_the_rate(rng, shape):
    x = rng.uniform(1.0, 2.0, size=shape).astype("float32")  # no zeros of its own
    keras.utils.set_random_seed(0)
    y = DropPath(0.3, seed=1)(x, training=True).numpy()
    flat_x, flat_y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    dropped = np.all(flat_y == 0, axis=1)
    kept = np.all(np.isclose(flat_y, flat_x / 0.7, rtol=1e-6), axis=1)
    assert np.all(dropped | kept)  # per sample: all zero or all scaled by 1 / keep
    assert abs(dropped.mean() - 0.3) < 0.06  # 1000 draws: sd 0.014
    keras.utils.set_random_seed(0)
    np.testing.assert_array_equal(DropPath(0.3, seed=1)(x, training=True), y)  # fixed seed


def test_rate_zero_is_identity_in_training(rng):
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_array_equal(DropPath(0.0)(x, training=True), x)


def test_unknown_batch_and_config():
    inputs = keras.Input((5, 3))
    drop = DropPath(0.2, seed=4)
    model = keras.Model(inputs, drop(inputs))
    assert model.output_shape == (None, 5, 3)
    output = model(tf.ones([3, 5, 3]), training=True).numpy()
    assert set(np.unique(output)) <= {0.0, 1.25}
    config = drop.get_config()
    assert "noise_shape" not in config and (config["rate"], config["seed"]) == (0.2, 4)
    assert DropPath.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("keypoint_gnn>DropPath") is DropPath


@pytest.mark.parametrize("rate", [1.0, -0.1, 2])
def test_rate_must_be_below_one(rate):
    with pytest.raises(ValueError, match=rf"rate={rate} must be a number in \[0, 1\)"):
        DropPath(rate)
