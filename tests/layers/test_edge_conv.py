"""EdgeConv (DGCNN, beyond the paper) against its formula in NumPy with the layer's own
weights; gradients, unknown batch, config."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import EdgeConv


def numpy_edge_conv(nodes, indices, kernel, bias, activation):
    """x_i' = max_j act(W [x_i || x_j - x_i] + b), written as a loop over batch and nodes."""
    batch, num, _ = nodes.shape
    outputs = np.zeros((batch, num, kernel.shape[1]))
    for b in range(batch):
        for i in range(num):
            edges = [activation(np.concatenate([nodes[b, i], nodes[b, j] - nodes[b, i]]) @ kernel
                                + bias) for j in indices[b, i]]
            outputs[b, i] = np.max(edges, axis=0)
    return outputs


def _graph(rng, batch=2, num=7, channels=3, k=3):
    nodes = rng.normal(size=(batch, num, channels)).astype("float32")
    return nodes, ops.knn_indices(tf.constant(nodes), k).numpy()


@pytest.mark.parametrize("activation, numpy_activation", [
    ("relu", lambda x: np.maximum(x, 0)), (None, lambda x: x)])
def test_matches_numpy(rng, activation, numpy_activation):
    nodes, indices = _graph(rng)
    conv = EdgeConv(units=4, activation=activation)
    conv.build([nodes.shape, indices.shape])
    conv.bias.assign(rng.normal(size=4).astype("float32"))
    expected = numpy_edge_conv(nodes, indices, conv.kernel.numpy(), conv.bias.numpy(),
                               numpy_activation)
    np.testing.assert_allclose(conv([nodes, indices]), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_weight_and_the_nodes(rng):
    nodes, indices = _graph(rng)
    nodes = tf.constant(nodes)
    conv = EdgeConv(units=4)
    conv.build([nodes.shape, indices.shape])
    conv.bias.assign(tf.fill([4], 0.5))  # most edges active under the ReLU
    with tf.GradientTape() as tape:
        tape.watch(nodes)
        loss = tf.reduce_sum(tf.square(conv([nodes, indices])))
    gradients = tape.gradient(loss, [nodes, *conv.trainable_weights])
    assert len(conv.trainable_weights) == 2  # kernel and bias
    assert all(np.abs(g.numpy()).sum() > 0 for g in gradients)
    # Both halves of W: the node's own features and the relative ones.
    assert np.abs(gradients[1].numpy()[:3]).sum() > 0 and np.abs(gradients[1].numpy()[3:]).sum() > 0


def test_unknown_batch_size_and_config():
    nodes = keras.Input((7, 3))
    indices = keras.Input((7, 2), dtype="int32")
    conv = EdgeConv(units=5, activation="gelu", use_bias=False)
    model = keras.Model([nodes, indices], conv([nodes, indices]))
    assert model.output_shape == (None, 7, 5) and conv.bias is None
    clone = EdgeConv.from_config(conv.get_config())
    assert clone.get_config() == conv.get_config()
    assert EdgeConv(units=2).get_config()["activation"] == "relu"  # DGCNN's default
    assert keras.saving.get_registered_object("keypoint_gnn>EdgeConv") is EdgeConv


def test_argument_error():
    with pytest.raises(ValueError, match="units=-1 must be a positive integer"):
        EdgeConv(units=-1)
