"""MaxRelativeConv (ViG's graph conv, beyond the paper) against its formula in NumPy with the
layer's own weights; gradients, unknown batch, config."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import MaxRelativeConv


def numpy_max_relative_conv(nodes, indices, kernel, bias):
    """x_i' = W [x_i || max_j (x_j - x_i)] + b, written as a loop over batch and nodes."""
    batch, num, _ = nodes.shape
    outputs = np.zeros((batch, num, kernel.shape[1]))
    for b in range(batch):
        for i in range(num):
            relative = np.max([nodes[b, j] - nodes[b, i] for j in indices[b, i]], axis=0)
            outputs[b, i] = np.concatenate([nodes[b, i], relative]) @ kernel + bias
    return outputs


def _graph(rng, batch=2, num=7, channels=3, k=3):
    nodes = rng.normal(size=(batch, num, channels)).astype("float32")
    return nodes, ops.knn_indices(tf.constant(nodes), k).numpy()


@pytest.mark.parametrize("activation", [None, "relu"])
def test_matches_numpy(rng, activation):
    nodes, indices = _graph(rng)
    conv = MaxRelativeConv(units=4, activation=activation)
    conv.build([nodes.shape, indices.shape])
    conv.bias.assign(rng.normal(size=4).astype("float32"))  # a bias that shows
    expected = numpy_max_relative_conv(nodes, indices, conv.kernel.numpy(), conv.bias.numpy())
    if activation == "relu":
        expected = np.maximum(expected, 0)
    np.testing.assert_allclose(conv([nodes, indices]), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_weight_and_the_nodes(rng):
    nodes, indices = _graph(rng)
    nodes = tf.constant(nodes)
    conv = MaxRelativeConv(units=4)
    with tf.GradientTape() as tape:
        tape.watch(nodes)
        loss = tf.reduce_sum(tf.square(conv([nodes, indices])))
    gradients = tape.gradient(loss, [nodes, *conv.trainable_weights])
    assert len(conv.trainable_weights) == 2  # kernel and bias
    assert all(np.abs(g.numpy()).sum() > 0 for g in gradients)


def test_unknown_batch_size_and_config(rng):
    nodes = keras.Input((7, 3))
    indices = keras.Input((7, 2), dtype="int32")
    conv = MaxRelativeConv(units=5, activation="gelu", use_bias=False)
    model = keras.Model([nodes, indices], conv([nodes, indices]))
    assert model.output_shape == (None, 7, 5) and conv.bias is None
    clone = MaxRelativeConv.from_config(conv.get_config())
    assert clone.get_config() == conv.get_config()
    assert conv.get_config()["activation"] == "gelu"
    assert keras.saving.get_registered_object("keypoint_gnn>MaxRelativeConv") is MaxRelativeConv


def test_argument_error():
    with pytest.raises(ValueError, match="units=0 must be a positive integer"):
        MaxRelativeConv(units=0)
