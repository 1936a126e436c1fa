"""ViGStack (Vision GNN blocks, beyond the paper) against a NumPy forward pass with its own
weights and a brute-force kNN; gradients, drop path, unknown batch, .keras round trip, config."""
import math

import numpy as np
import pytest

from keypoint_gnn import registry
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import GraphConfig
from keypoint_gnn.layers import EdgeConv, MaxRelativeConv, ViGStack
from tests.ops import brute_force_knn

NODES = 9


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_batch_norm(layer, x):
    """Inference: gamma (x - moving mean) / sqrt(moving variance + eps) + beta."""
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    return layer.gamma.numpy() * (x - mean) / np.sqrt(variance + layer.epsilon) + layer.beta.numpy()


def numpy_graph_conv(kind, nodes, indices, kernel, bias):
    """max_relative: gelu(W [x_i || max_j (x_j - x_i)] + b); edge: max_j gelu(W [x_i || x_j - x_i] + b)."""
    neighbours = np.take_along_axis(nodes[:, None], indices[..., None], axis=2)  # (B, N, k, F)
    relative = neighbours - nodes[:, :, None]
    if kind == "max_relative":
        return gelu(np.concatenate([nodes, relative.max(axis=2)], -1) @ kernel + bias)
    own = np.broadcast_to(nodes[:, :, None], relative.shape)
    return gelu(np.concatenate([own, relative], -1) @ kernel + bias).max(axis=2)


def numpy_vig_stack(stack, nodes, positions):
    """The stack at inference, written from its docstring's equations."""
    def dense(layer, x):
        return x @ layer.kernel.numpy()  # no bias: a batch norm follows

    x = nodes @ stack.projection.kernel.numpy() + stack.projection.bias.numpy()
    for i in range(stack.num_layers):
        h = numpy_batch_norm(stack.grapher_in_norm[i], dense(stack.grapher_in[i], x))
        indices = brute_force_knn(h, stack.k, stack.dilation, positions, stack.position_weight)
        conv = stack.graph_convs[i]
        h = numpy_graph_conv(stack.conv, h, indices, conv.kernel.numpy(), conv.bias.numpy())
        x = x + numpy_batch_norm(stack.grapher_out_norm[i], dense(stack.grapher_out[i], h))
        h = gelu(numpy_batch_norm(stack.ffn_in_norm[i], dense(stack.ffn_in[i], x)))
        x = x + numpy_batch_norm(stack.ffn_out_norm[i], dense(stack.ffn_out[i], h))
    return x


def _inputs(rng, batch=2):
    nodes = rng.normal(size=(batch, NODES, 5)).astype("float32")
    adjacency = np.ones((batch, NODES, NODES), "float32")
    positions = rng.uniform(size=(batch, NODES, 2)).astype("float32")
    return nodes, adjacency, positions


def _randomize(stack, rng):
    """Batch norms that are not the identity, and graph-conv biases that show."""
    for layer in (stack.grapher_in_norm + stack.grapher_out_norm + stack.ffn_in_norm
                  + stack.ffn_out_norm):
        size = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, size))
        layer.beta.assign(rng.normal(0, 0.1, size))
        layer.moving_mean.assign(rng.normal(0, 0.1, size))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, size))
    for conv in stack.graph_convs:
        conv.bias.assign(rng.normal(0, 0.1, conv.bias.shape[0]))


@pytest.mark.parametrize("conv, dilation, positions_given, drop_path", [
    ("max_relative", 1, True, 0.0), ("max_relative", 2, False, 0.0), ("edge", 2, True, 0.5)])
def test_matches_numpy_at_inference(rng, conv, dilation, positions_given, drop_path):
    """Drop path is the identity at inference: the rate-0.5 stack matches the reference too."""
    nodes, adjacency, positions = _inputs(rng)
    stack = ViGStack(units=6, num_layers=2, k=3, dilation=dilation, conv=conv,
                     drop_path=drop_path, position_weight=0.7)
    inputs = [nodes, adjacency, positions] if positions_given else [nodes, adjacency]
    stack(inputs)
    _randomize(stack, rng)
    output = stack(inputs, training=False).numpy()
    expected = numpy_vig_stack(stack, nodes, positions if positions_given else None)
    assert output.shape == (2, NODES, 6)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv", ["max_relative", "edge"])
def test_gradients_reach_every_trainable_weight(rng, conv):
    nodes, adjacency, positions = _inputs(rng)
    stack = ViGStack(units=6, num_layers=2, k=3, conv=conv)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(stack([nodes, adjacency, positions], training=True)))
    gradients = tape.gradient(loss, stack.trainable_weights)
    # Projection (2), per block: 4 dense kernels, 4 batch norms (2 each), the conv (2).
    assert len(stack.trainable_weights) == 2 + 2 * (4 + 8 + 2)
    for weight, gradient in zip(stack.trainable_weights, gradients):
        assert gradient is not None and np.abs(gradient.numpy()).sum() > 0, weight.name


def test_drop_path_drops_whole_branches_per_sample_in_training(rng):
    """Rate 0.9, one block: a sample whose two branches are both dropped (0.81 of them) leaves
    the stack as its input projection; the others do not."""
    nodes = rng.normal(size=(64, NODES, 5)).astype("float32")
    keras.utils.set_random_seed(3)
    stack = ViGStack(units=4, num_layers=1, k=2, drop_path=0.9)
    output = stack([nodes, tf.zeros([64, NODES, NODES])], training=True).numpy()
    projected = stack.projection(nodes).numpy()
    skipped = np.all(np.isclose(output, projected, atol=1e-6), axis=(1, 2))
    assert 0.6 < skipped.mean() < 0.97


def _functional(stack):
    inputs = [keras.Input((NODES, 5)), keras.Input((NODES, NODES)), keras.Input((NODES, 2))]
    return keras.Model(inputs, stack(inputs))


def test_unknown_batch_and_keras_round_trip(tmp_path, rng):
    model = _functional(ViGStack(units=4, num_layers=2, k=2, dilation=2, conv="edge",
                                 drop_path=0.2, position_weight=0.5))
    assert model.output_shape == (None, NODES, 4)
    _randomize(model.layers[-1], rng)
    inputs = _inputs(rng, batch=3)
    reference = model.predict(list(inputs), verbose=0)
    assert reference.shape == (3, NODES, 4)
    model.save(tmp_path / "vig.keras")
    restored = keras.models.load_model(tmp_path / "vig.keras")
    np.testing.assert_array_equal(restored.predict(list(inputs), verbose=0), reference)
    assert restored.layers[-1].get_config() == model.layers[-1].get_config()


def test_rejects_more_neighbours_than_nodes():
    with pytest.raises(ValueError, match=f"k=3 x dilation=3 must be below the N={NODES} nodes"):
        _functional(ViGStack(units=4, num_layers=1, k=3, dilation=3))


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 0}, "units=0 must be a positive integer"),
    ({"num_layers": 0}, "num_layers=0 must be a positive integer"),
    ({"k": 0}, "k=0 must be a positive integer"),
    ({"dilation": 0}, "dilation=0 must be a positive integer"),
    ({"conv": "gcn"}, "conv='gcn' is not one of 'max_relative', 'edge'"),
    ({"drop_path": 1.0}, r"drop_path=1.0 must be a number in \[0, 1\)"),
    ({"position_weight": -1.0}, "position_weight=-1.0 must be a finite number >= 0"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViGStack(**{"units": 4, "num_layers": 1, **kwargs})


def test_from_section_config_round_trip_and_registry():
    stack = ViGStack.from_section(GraphConfig(kind="vig", layers=3, units=8, knn=4, knn_dilation=2,
                                              vig_conv="edge", drop_path=0.1,
                                              position_weight=0.5))
    assert (stack.units, stack.num_layers, stack.k, stack.dilation, stack.conv, stack.drop_path,
            stack.position_weight) == (8, 3, 4, 2, "edge", 0.1, 0.5)
    assert all(isinstance(conv, EdgeConv) for conv in stack.graph_convs)
    assert isinstance(ViGStack(4, 1).graph_convs[0], MaxRelativeConv)  # the default conv
    clone = ViGStack.from_config(stack.get_config())
    assert clone.get_config() == stack.get_config()
    assert keras.saving.get_registered_object("keypoint_gnn>ViGStack") is ViGStack
    assert registry.gnn_class("vig") is ViGStack
    assert registry.POSITION_GNNS == ("vig",) and set(registry.POSITION_GNNS) <= set(registry.GNNS)
    assert [registry.vig_conv_class(name) for name in registry.VIG_CONVS] == [MaxRelativeConv,
                                                                             EdgeConv]
