"""Precise BN: moving statistics replaced by averages over batches with the final weights."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.precise_bn import batch_norm_layers, recalibrate_batch_norm


def _conv_bn_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, synchronized=True, name="bn")(x)
    outputs = keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_recalibration_sets_the_average_of_the_batch_statistics(rng):
    model = _conv_bn_model()
    batches = [rng.normal(1.0 + i, 2.0, size=(5, 6, 6, 2)).astype("float32") for i in range(4)]
    others = [w.numpy().copy() for w in model.weights if "moving" not in w.name]
    used = recalibrate_batch_norm(model, iter([(b, np.zeros(5)) for b in batches]), 3)
    assert used == 3
    # Reference: the BN layer's input per batch (the conv's output), its per-channel mean and
    # (biased) variance, averaged over the first 3 batches; the 4th is not used.
    conv = model.get_layer("conv")
    inputs = [conv(b).numpy().astype("float64") for b in batches[:3]]
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([x.mean((0, 1, 2)) for x in inputs], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([x.var((0, 1, 2)) for x in inputs], axis=0), rtol=1e-4)
    assert bn.momentum == 0.9  # restored
    for before, weight in zip(others, [w for w in model.weights if "moving" not in w.name]):
        np.testing.assert_array_equal(weight.numpy(), before)  # nothing else moved
    # Inference now normalises with those statistics.
    x = inputs[0]
    expected = ((x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
                * bn.gamma.numpy() + bn.beta.numpy())
    probe = keras.Model(model.input, bn.output)
    np.testing.assert_allclose(probe(batches[0], training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-5)


def test_recalibration_repairs_stale_statistics(rng):
    """Moving averages of an older network give wrong outputs; recalibration restores the
    outputs that the population statistics of the current network give."""
    model = _conv_bn_model()
    images = rng.normal(size=(64, 6, 6, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(16)
    recalibrate_batch_norm(model, dataset, 4)
    reference = model(images, training=False).numpy()
    conv = model.get_layer("conv")
    conv.kernel.assign(conv.kernel * 3.0 + 0.5)  # the weights move on; the statistics go stale
    recalibrate_batch_norm(model, dataset, 4)
    fresh = model.get_layer("bn").moving_variance.numpy()
    features = conv(images).numpy().astype("float64").reshape(4, 16, 6, 6, 3)
    np.testing.assert_allclose(fresh, features.var(axis=(1, 2, 3)).mean(0), rtol=1e-4)
    assert not np.allclose(model(images, training=False).numpy(), reference)


def test_batch_norm_layers_finds_nested_layers():
    inner = keras.Sequential([keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="outer_bn")(inner(inputs)))
    assert sorted(layer.name for layer in batch_norm_layers(model)) == ["inner_bn", "outer_bn"]


@pytest.mark.parametrize("num_batches", [0, -2, 1.5, True])
def test_bad_number_of_batches(num_batches):
    with pytest.raises(ValueError, match=f"num_batches={num_batches!r} must be a positive integer"):
        recalibrate_batch_norm(_conv_bn_model(), [np.zeros((1, 6, 6, 2), "float32")], num_batches)


def test_model_without_batch_norm_and_empty_dataset():
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(1)(inputs), name="plain")
    with pytest.raises(ValueError, match="model 'plain' has no BatchNormalization layer"):
        recalibrate_batch_norm(plain, [np.zeros((1, 3))], 1)
    model = _conv_bn_model()
    before = model.get_layer("bn").moving_mean.numpy().copy()
    with pytest.raises(ValueError, match="the dataset yielded no batch"):
        recalibrate_batch_norm(model, [], 2)
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), before)
    assert model.get_layer("bn").momentum == 0.9
